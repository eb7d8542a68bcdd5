/*
 * Payloads: JSON (content-format 50) and CBOR (60) to and from one
 * in-memory form, a cJSON tree, so that a value written in one format
 * reads back in the other. CBOR maps and arrays of definite and indefinite
 * length are accepted; map keys must be text.
 */
#ifndef DEVGATE_PAYLOAD_H
#define DEVGATE_PAYLOAD_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

/* Nesting deeper than this is refused as malformed. */
#define DG_PAYLOAD_MAX_DEPTH 32

/*
 * Returns the offset of the first byte of s (len bytes) that does not start
 * a well-formed UTF-8 sequence (overlong forms, surrogates and code points
 * above U+10FFFF are ill-formed), or len when all of it is UTF-8: the check
 * that text in a payload passes, for text from elsewhere (the CLI's).
 */
size_t dg_payload_utf8_check(const uint8_t *s, size_t len);

/*
 * Encodes `value` as dg_payload_encode() does into a buffer it allocates,
 * growing it up to `max` bytes (*out: free with free()). Returns 0 and sets
 * *out and *out_len; -ENOBUFS when the encoding is longer than max;
 * -ENOTSUP; -ENOMEM.
 */
int dg_payload_encode_alloc(int format, const cJSON *value, size_t max, uint8_t **out,
                            size_t *out_len);

/*
 * Decodes `len` bytes of content-format `format` (50 JSON, 60 CBOR) into a
 * new cJSON tree (*out, free with cJSON_Delete). Returns 0; -EINVAL for a
 * malformed payload with a short diagnostic in diag ("CBOR: map key is not
 * text", "JSON: syntax error at byte 12"); -ENOTSUP for another format;
 * -ENOMEM. An empty payload is malformed. CBOR byte strings, tags other
 * than those for date/time and bignums, undefined and simple values other
 * than false/true/null are refused; half, single and double floats become
 * numbers; text must be UTF-8.
 */
int dg_payload_decode(int format, const uint8_t *data, size_t len, cJSON **out, char *diag,
                      size_t diag_len);

/*
 * Encodes `value` in content-format `format` (50 or 60) into out (capacity
 * cap). JSON is compact (no white space); CBOR uses definite lengths, the
 * smallest integer encodings for integral numbers that fit in int64, and
 * doubles otherwise. Returns 0 and sets *out_len; -ENOBUFS when it does not
 * fit; -ENOTSUP for another format.
 */
int dg_payload_encode(int format, const cJSON *value, uint8_t *out, size_t cap, size_t *out_len);

#endif
