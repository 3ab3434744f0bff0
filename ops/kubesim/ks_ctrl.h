/* The controllers of kubesim: Deployments, ReplicaSets and simulated pods, as kube-controller-manager and the kubelet run them. */
#ifndef KS_CTRL_H
#define KS_CTRL_H

#include "ks_rules.h"
#include "ks_store.h"

#include <jansson.h>

typedef struct ks_ctrl ks_ctrl_t;

/* The API server's default --event-ttl: one hour. */
#define KS_EVENT_TTL_DEFAULT_MS (3600 * 1000LL)

/* Creates the controller for st (borrowed, as are rules); scale is the time scale
 * (simulated time runs scale times faster). Registers itself as st's change hook. */
ks_ctrl_t *ks_ctrl_new(ks_store_t *st, const ks_rules_t *rules, double scale);
/* Events expire ttl_ms of simulated time after their last write, as the API server's
 * --event-ttl makes them (default one hour); 0 keeps them. Set before ks_ctrl_start. */
void ks_ctrl_set_event_ttl(ks_ctrl_t *c, int64_t ttl_ms);
int ks_ctrl_start(ks_ctrl_t *c);
/* Stops and joins the controller thread. */
void ks_ctrl_stop(ks_ctrl_t *c);
void ks_ctrl_destroy(ks_ctrl_t *c);

/* Store lock held: the logs a container of pod has written so far, one line each
 * (new reference, array of strings), or NULL with errstr set when it never started. */
json_t *ks_ctrl_pod_logs(ks_ctrl_t *c, ks_obj_t *pod, const char *container, int previous,
                         char *errstr, size_t errstr_size);

/* Resolves an intstr (number or "25%") against total, rounding up or down as
 * Kubernetes' GetScaledValueFromIntOrPercent does. def when v is absent. */
int ks_ctrl_scaled(const json_t *v, int total, int round_up, int def);

/* maxSurge and maxUnavailable of a rolling update for replicas, as ResolveFenceposts:
 * both zero makes maxUnavailable 1. */
void ks_ctrl_fenceposts(const json_t *rolling, int replicas, int *surge, int *unavailable);

/* The pod-template-hash of a template: FNV-32a of its canonical JSON and collision
 * count, encoded with Kubernetes' SafeEncodeString alphabet. */
void ks_ctrl_template_hash(const json_t *tmpl, int64_t collision_count, char *out,
                           size_t out_size);

#endif
