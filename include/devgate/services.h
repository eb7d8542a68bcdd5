/*
 * The device services the Golioth firmware SDK speaks: LightDB State
 * (".d/<path>", with Observe), LightDB Stream (".s/<path>", with Block1) and
 * logs (".s/logs" and the older "logs"). Each is a router handler.
 */
#ifndef DEVGATE_SERVICES_H
#define DEVGATE_SERVICES_H

#include <cjson/cJSON.h>
#include <sqlite3.h>

#include "devgate/coap.h"
#include "devgate/router.h"

/* ".d/<path>": GET (Observe=0 registers, 1 deregisters), POST/PUT set, DELETE. */
void dg_svc_state(const dg_route_ctx *rc, const dg_coap_request *req, dg_coap_response *resp);

/* ".s/<path>": POST a value or an array of values, Block1 for large bodies. */
void dg_svc_stream(const dg_route_ctx *rc, const dg_coap_request *req, dg_coap_response *resp);

/* ".s/logs" and "logs": POST a log entry. */
void dg_svc_logs(const dg_route_ctx *rc, const dg_coap_request *req, dg_coap_response *resp);

struct dg_session;
struct dg_deferred;

/*
 * Fills `resp` (whose body buffer holds body_cap bytes) with a 2.05 of the
 * representation `data` (`len` bytes in `format`; NULL: none), cut into
 * the Block2 block `block2` asks for (the raw option, or -1) when it does
 * not fit: ETag of the whole, Size2 on the first block, and the next block
 * let through the rate limit. Returns 0, or a negative errno with `resp`
 * holding the error answer (a block past the end, no room).
 */
int dg_svc_reply_blocks(struct dg_session *s, dg_coap_response *resp, const uint8_t *data,
                        size_t len, int format, int64_t block2, uint64_t now_ms);

/*
 * Decodes `data` (`len` bytes) in the request's Content-Format (JSON when
 * absent, or CBOR). Returns the value, or NULL with `resp` holding the
 * answer: 4.15 for another format, 4.00 with a short diagnostic for a
 * malformed payload, 5.00 when out of memory.
 */
cJSON *dg_svc_decode(const dg_coap_request *req, const uint8_t *data, size_t len,
                     dg_coap_response *resp);

/* As dg_svc_decode() for the request's own payload; an empty one is 4.00. */
cJSON *dg_svc_decode_request(const dg_coap_request *req, dg_coap_response *resp);

/*
 * The format a GET's Accept asks for: DG_COAP_FMT_JSON when absent, JSON or
 * CBOR; -1 with `resp` holding 4.06 for anything else.
 */
int dg_svc_accept(const dg_coap_request *req, dg_coap_response *resp);

/*
 * Collects the request's non-empty Uri-Path segments into `out` (borrowed
 * from `req`, at most DG_COAP_MAX_PATH) and returns their count. Older SDK
 * builds join a prefix such as ".rpc/" with the path "" and send the
 * trailing empty segment as well; the services route on what is left.
 */
size_t dg_svc_segments(const dg_coap_request *req, const dg_coap_str **out);

/*
 * What every GET does first: the format Accept asks for, the Block2 asked
 * for decoded, an Observe=1 cancelling the observation with the request's
 * token. Sets *registers when the request registers an observation
 * (Observe=0 and not a later Block2 block, which never does). Returns the
 * format, or -1 with `resp` holding the answer (4.06, 4.00 for a bad
 * Block2).
 */
int dg_svc_get_start(const dg_route_ctx *rc, const dg_coap_request *req, dg_coap_response *resp,
                     int *registers);

/*
 * Defers the answer to `req` until the write `run(db, arg)` commits on the
 * store's writer thread, answered `code_ok` then; takes over `arg` (freed
 * with `free_arg`). Out of memory: 5.00 at once.
 */
void dg_svc_defer_write(const dg_route_ctx *rc, const dg_coap_request *req, dg_coap_response *resp,
                        uint8_t code_ok, int (*run)(sqlite3 *, void *), void *arg,
                        void (*free_arg)(void *));

/*
 * The whole GET of a rendered resource of `kind` (enum dg_obs_kind, with a
 * renderer in the router): Accept checked, Observe=0 registers and 1
 * cancels (a later Block2 block never registers), the render run on the
 * store's reader thread, the answer the Block2 block asked for.
 */
void dg_svc_get_rendered(const dg_route_ctx *rc, const dg_coap_request *req, dg_coap_response *resp,
                         int kind);

/*
 * A deferred reply whose job is `run(db, arg)`, answered `code_ok` when it
 * succeeds; takes over `arg` (freed with `free_arg`, also on failure).
 * Returns NULL when out of memory.
 */
struct dg_deferred *dg_svc_deferred_new(uint8_t code_ok, int (*run)(sqlite3 *, void *), void *arg,
                                        void (*free_arg)(void *));

/* ".rpc": GET with Observe=0 registers for calls; ".rpc/status": POST a call's result. */
void dg_svc_rpc(const dg_route_ctx *rc, const dg_coap_request *req, dg_coap_response *resp);

/*
 * ".c": GET (Observe=0 registers, 1 cancels) the device's effective
 * settings {"version", "settings"}; ".c/status": POST/PUT the version the
 * device applied and the keys it rejected, stored before the 2.04.
 */
void dg_svc_settings(const dg_route_ctx *rc, const dg_coap_request *req, dg_coap_response *resp);

/*
 * ".u": GET ".u/desired" (Observe=0 registers) the OTA manifest; GET
 * ".u/c/<package>@<version>" an artifact's bytes by Block2; POST
 * ".u/c/<package>" the device's state report.
 */
void dg_svc_ota(const dg_route_ctx *rc, const dg_coap_request *req, dg_coap_response *resp);

#endif
