/* Label and field selectors: parsing the query forms and LabelSelector objects, and matching. */
#ifndef KS_SEL_H
#define KS_SEL_H

#include <jansson.h>
#include <stddef.h>

typedef struct ks_sel ks_sel_t;

/* Parses a labelSelector query value ("app=web,tier!=db,env in (a,b),!legacy").
 * NULL on a syntax error, with the reason in errstr. An empty string selects everything. */
ks_sel_t *ks_sel_parse(const char *s, char *errstr, size_t errstr_size);

/* Builds a selector from a metav1.LabelSelector object (matchLabels, matchExpressions).
 * A NULL or empty object selects nothing when empty_matches_nothing is set, as a Service
 * without selector does; otherwise everything. */
ks_sel_t *ks_sel_from_json(const json_t *label_selector, int empty_matches_nothing);

/* Parses a fieldSelector ("metadata.name=web,status.phase!=Running"): keys are dotted
 * paths into the object. */
ks_sel_t *ks_sel_parse_fields(const char *s, char *errstr, size_t errstr_size);

void ks_sel_destroy(ks_sel_t *sel);

/* Label selectors: match against a labels object (may be NULL). */
int ks_sel_match(const ks_sel_t *sel, const json_t *labels);
/* Field selectors: match against the whole object. */
int ks_sel_match_fields(const ks_sel_t *sel, const json_t *obj);

/* The query form of a LabelSelector object ("app=web,tier in (a,b)"); free() it. */
char *ks_sel_string(const json_t *label_selector);

#endif
