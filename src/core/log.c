/* log.c - one formatted line per call, written with a single write(2) so threads do not interleave. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int level_cur = -1;

static int level_from_env(void) {
    const char *e = getenv("SUGGESTD_LOG");
    if (!e) return LOG_LEVEL_INFO;
    if (!strcmp(e, "error")) return LOG_LEVEL_ERROR;
    if (!strcmp(e, "warn")) return LOG_LEVEL_WARN;
    if (!strcmp(e, "debug")) return LOG_LEVEL_DEBUG;
    return LOG_LEVEL_INFO;
}

void log_set_level(log_level level) { level_cur = (int)level; }

int log_enabled(log_level level) {
    if (level_cur < 0) level_cur = level_from_env();
    return (int)level <= level_cur;
}

void log_msg(log_level level, const char *fmt, ...) {
    static const char *tags[] = {"error", "warn", "info", "debug"};
    if (!log_enabled(level)) return;
    char line[2048];
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof(line), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %-5s ", tm.tm_year + 1900,
                     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000,
                     tags[level]);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
    va_end(ap);
    if (m < 0) m = 0;
    size_t len = (size_t)n + ((size_t)m < sizeof(line) - (size_t)n - 1 ? (size_t)m : sizeof(line) - (size_t)n - 2);
    line[len++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;
}
