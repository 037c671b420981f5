/* sched.c - dispatch through the ops table. */
#include "sched_impl.h"

#include <string.h>

#include "alloc.h"

sched_opts sched_opts_default(void) {
    return (sched_opts){.queue_max = 64, .max_batch = 16, .step_tokens = 0, .prefix_cache = 1};
}

void sched_destroy(sched *s) {
    if (s) s->ops->destroy(s);
}
err sched_submit(sched *s, const sched_request *r, sched_req **out, errbuf *eb) { return s->ops->submit(s, r, out, eb); }
int sched_next(sched_req *q, sched_event *ev, int timeout_ms) { return q->ops->next(q, ev, timeout_ms); }
void sched_cancel(sched_req *q) {
    if (q) q->ops->cancel(q);
}
void sched_release(sched_req *q) {
    if (q) q->ops->release(q);
}
void sched_get_stats(sched *s, sched_stats *st) { s->ops->stats(s, st); }
int sched_healthy(sched *s) { return s->ops->healthy(s); }
int32_t sched_n_ctx(sched *s) { return s->ops->n_ctx(s); }

void sched_event_fini(sched_event *ev) {
    if (!ev) return;
    xfree(ev->text);
    xfree(ev->tokens);
    memset(ev, 0, sizeof(*ev));
}
