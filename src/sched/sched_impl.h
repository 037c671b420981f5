/* sched_impl.h - the ops an engine implementation provides behind sched_api.h. */
#ifndef SUGGESTD_SCHED_SCHED_IMPL_H
#define SUGGESTD_SCHED_SCHED_IMPL_H

#include "sched_api.h"

typedef struct sched_ops {
    void (*destroy)(sched *s);
    err (*submit)(sched *s, const sched_request *r, sched_req **out, errbuf *eb);
    int (*next)(sched_req *q, sched_event *ev, int timeout_ms);
    void (*cancel)(sched_req *q);
    void (*release)(sched_req *q);
    void (*stats)(sched *s, sched_stats *st);
    int (*healthy)(sched *s);
    int32_t (*n_ctx)(sched *s);
} sched_ops;

/* Every implementation's sched and sched_req start with these. */
struct sched {
    const sched_ops *ops;
};

struct sched_req {
    const sched_ops *ops;
};

#endif
