/* Protobuf request bodies (the k8s\0 envelope with a runtime.Unknown) decoded into the JSON kubesim handles, by field tables. */
#ifndef KS_PROTO_H
#define KS_PROTO_H

#include <jansson.h>
#include <stddef.h>

/* How a field is written in JSON. */
enum {
    KS_PT_NONE = 0,
    KS_PT_STRING,
    KS_PT_BYTES,    /* base64 */
    KS_PT_INT32,
    KS_PT_INT64,
    KS_PT_BOOL,
    KS_PT_MSG,      /* a nested message: an object */
    KS_PT_TIME,     /* meta.v1.Time {seconds=1, nanos=2}: RFC 3339, null when zero */
    KS_PT_INTSTR,   /* intstr.IntOrString {type=1, intVal=2, strVal=3} */
    KS_PT_QUANTITY, /* resource.Quantity {string=1} */
    KS_PT_FIELDSV1, /* meta.v1.FieldsV1 {Raw=1}: the JSON it holds */
};
enum {
    KS_PF_REPEATED = 1,
    KS_PF_MAP = 2,    /* repeated entries {key=1 (string), value=2 (vtype)} */
    KS_PF_KEEP = 4,   /* a Go pointer: a zero value stays */
    KS_PF_INLINE = 8, /* an embedded struct: its fields go into the parent object */
};

typedef struct ks_pfield {
    unsigned num;
    const char *name;
    unsigned char type;
    unsigned char flags;
    short msg;            /* index in ks_proto_msgs for KS_PT_MSG, else -1 */
    unsigned char vtype;  /* a map's value type */
    short vmsg;
} ks_pfield_t;

typedef struct ks_pmsg {
    const char *name; /* "apps.v1.Deployment" */
    const ks_pfield_t *fields;
    size_t nfields;
} ks_pmsg_t;

/* The generated tables (ks_proto_fields.c, from proto.fields by ops/kubesim/gen-proto). */
extern const ks_pmsg_t ks_proto_msgs[];
extern const size_t ks_proto_nmsgs;

/* Decodes a body of Content-Type application/vnd.kubernetes.protobuf into a new JSON object
 * with apiVersion and kind. On error NULL, with *code 400 (malformed) or 415 (a kind kubesim
 * does not decode from protobuf) and the message in errstr. */
json_t *ks_proto_decode(const void *body, size_t len, int *code, char *errstr, size_t n);

/* Encodes an object of a kind ks_proto_decode reads (with apiVersion and kind) into the
 * k8s\0 envelope; *out is malloc'ed. -1 when the object has a field without a table entry
 * (or a value of another type): then answer JSON. */
int ks_proto_encode(const json_t *obj, char **out, size_t *out_len);

#endif
