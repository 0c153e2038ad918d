/* The best config for a problem, read from a tuning database following docs/schema.md only
   (levels 1 and 2 of its lookup order: exact, nearest shape).

   Build:  gcc -O2 -o tunesvc_lookup tunesvc_lookup.c -lsqlite3 -lm
   Run:    tunesvc_lookup DB TEMPLATE SHAPE DTYPE DEVICE_KEY [TEMPLATE_HASH]
   Prints: LEVEL TUNED_SHAPE TIME_S CONFIG_JSON   (or "none" when neither level answers)   */

#include <math.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DIMS 16

static int parse_shape(const char *text, double *logs) {
    int n = 0;
    const char *p = text;
    while (*p && n < MAX_DIMS) {
        char *end;
        long d = strtol(p, &end, 10);
        if (end == p || d < 1) return -1;
        logs[n++] = log((double)d);
        if (*end == 'x') end++;
        else if (*end) return -1;
        p = end;
    }
    return *p ? -1 : n;
}

static int fail(sqlite3 *db, const char *what) {
    fprintf(stderr, "tunesvc_lookup: %s: %s\n", what, sqlite3_errmsg(db));
    sqlite3_close(db);
    return 2;
}

/* The fastest ok config of the device at one shape: prints it and returns 1, or returns 0. */
static int fastest(sqlite3 *db, const char **key, const char *shape, const char *level) {
    const char *sql = "SELECT config, time_median FROM measurements WHERE template = ? AND template_hash = ? "
                      "AND dtype = ? AND status = 'ok' AND device_key = ? AND shape = ? ORDER BY time_median LIMIT 1";
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) return -1;
    for (int i = 0; i < 4; i++) sqlite3_bind_text(st, i + 1, key[i], -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 5, shape, -1, SQLITE_STATIC);
    int found = sqlite3_step(st) == SQLITE_ROW;
    if (found)
        printf("%s %s %.17g %s\n", level, shape, sqlite3_column_double(st, 1), (const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    return found;
}

/* The tuned shape of the same rank nearest in log space (ties: the smaller text); 0 if none. */
static int nearest(sqlite3 *db, const char **key, const double *want, int rank, char *best, size_t size) {
    const char *sql = "SELECT shape FROM record_shapes WHERE template = ? AND template_hash = ? AND dtype = ? "
                      "AND device_key = ? ORDER BY shape";
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) return -1;
    for (int i = 0; i < 4; i++) sqlite3_bind_text(st, i + 1, key[i], -1, SQLITE_STATIC);
    double best_d = INFINITY;
    while (sqlite3_step(st) == SQLITE_ROW) {
        const char *shape = (const char *)sqlite3_column_text(st, 0);
        double logs[MAX_DIMS];
        if (parse_shape(shape, logs) != rank) continue;
        double d = 0;
        for (int i = 0; i < rank; i++) d += (logs[i] - want[i]) * (logs[i] - want[i]);
        d = sqrt(d);
        if (d < best_d || (d == best_d && strcmp(shape, best) < 0)) {
            best_d = d;
            snprintf(best, size, "%s", shape);
        }
    }
    sqlite3_finalize(st);
    return isfinite(best_d);
}

/* The hash of the template's newest ok record, for callers that do not pass one. */
static int newest_hash(sqlite3 *db, const char *template, char *out, size_t size) {
    sqlite3_stmt *st;
    const char *sql = "SELECT template_hash FROM measurements WHERE template = ? AND status = 'ok' "
                      "ORDER BY created_at DESC LIMIT 1";
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) return -1;
    sqlite3_bind_text(st, 1, template, -1, SQLITE_STATIC);
    int found = sqlite3_step(st) == SQLITE_ROW;
    if (found) snprintf(out, size, "%s", (const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    return found;
}

int main(int argc, char **argv) {
    if (argc != 6 && argc != 7) {
        fprintf(stderr, "usage: %s DB TEMPLATE SHAPE DTYPE DEVICE_KEY [TEMPLATE_HASH]\n", argv[0]);
        return 2;
    }
    double want[MAX_DIMS];
    int rank = parse_shape(argv[3], want);
    if (rank < 1) {
        fprintf(stderr, "tunesvc_lookup: shape %s is not like 64x64x64\n", argv[3]);
        return 2;
    }
    sqlite3 *db;
    if (sqlite3_open_v2(argv[1], &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) return fail(db, argv[1]);
    char hash[64] = "", shape[256] = "";
    if (argc == 7) snprintf(hash, sizeof hash, "%s", argv[6]);
    else if (newest_hash(db, argv[2], hash, sizeof hash) < 0) return fail(db, "reading template hashes");
    const char *key[4] = {argv[2], hash, argv[4], argv[5]};
    int found = fastest(db, key, argv[3], "exact");
    if (found < 0) return fail(db, "reading measurements");
    if (!found) {
        int near = nearest(db, key, want, rank, shape, sizeof shape);
        if (near < 0) return fail(db, "reading record_shapes");
        found = near && fastest(db, key, shape, "nearest_shape") > 0;
    }
    if (!found) printf("none\n");
    sqlite3_close(db);
    return 0;
}
