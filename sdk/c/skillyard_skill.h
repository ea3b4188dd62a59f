/*
 * skillyard_skill.h: the skill ABI for C guests (wasm32-wasi reactor), one header.
 *
 * Build:  clang --target=wasm32-wasi -O2 -mexec-model=reactor -I sdk/c -o skill.wasm skill.c
 *
 * Define, in exactly one .c file, before including this header:
 *     #define SKILLYARD_SKILL_IMPL
 * and implement:
 *     void skill_on_describe(sk_writer *w);                         // write the descriptor map
 *     void skill_on_call(const sk_request *req, sk_response *res);  // handle one request
 *
 * The header exports skill_alloc / skill_free / skill_handle / skill_describe,
 * and gives a small msgpack reader (sk_reader) and writer (sk_writer).
 * docs/wasm-abi.md is the contract this implements.
 */
#ifndef SKILLYARD_SKILL_H
#define SKILLYARD_SKILL_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ---- msgpack writer ------------------------------------------------------------ */

typedef struct {
    uint8_t *buf;
    uint32_t len, cap;
    int err; /* set when an allocation failed; the buffer is then unusable */
} sk_writer;

static inline void sk_w_raw(sk_writer *w, const void *p, uint32_t n) {
    if (w->err) return;
    if (w->len + n > w->cap) {
        uint32_t cap = w->cap ? w->cap : 64;
        while (cap < w->len + n) cap *= 2;
        uint8_t *nb = (uint8_t *)realloc(w->buf, cap);
        if (!nb) { w->err = 1; return; }
        w->buf = nb;
        w->cap = cap;
    }
    if (n) memcpy(w->buf + w->len, p, n);
    w->len += n;
}

static inline void sk_w_byte(sk_writer *w, uint8_t b) { sk_w_raw(w, &b, 1); }

static inline void sk_w_be(sk_writer *w, uint8_t tag, uint64_t v, int bytes) {
    uint8_t out[9];
    out[0] = tag;
    for (int i = 0; i < bytes; i++) out[1 + i] = (uint8_t)(v >> (8 * (bytes - 1 - i)));
    sk_w_raw(w, out, (uint32_t)(1 + bytes));
}

static inline void sk_w_nil(sk_writer *w) { sk_w_byte(w, 0xc0); }
static inline void sk_w_bool(sk_writer *w, int b) { sk_w_byte(w, b ? 0xc3 : 0xc2); }

static inline void sk_w_int(sk_writer *w, int64_t v) {
    if (v >= 0 && v < 128) sk_w_byte(w, (uint8_t)v);
    else if (v < 0 && v >= -32) sk_w_byte(w, (uint8_t)(0xe0 | (v + 32)));
    else sk_w_be(w, 0xd3, (uint64_t)v, 8);
}

static inline void sk_w_map(sk_writer *w, uint32_t n) {
    if (n < 16) sk_w_byte(w, (uint8_t)(0x80 | n));
    else sk_w_be(w, 0xdf, n, 4);
}

static inline void sk_w_array(sk_writer *w, uint32_t n) {
    if (n < 16) sk_w_byte(w, (uint8_t)(0x90 | n));
    else sk_w_be(w, 0xdd, n, 4);
}

static inline void sk_w_str(sk_writer *w, const char *s, uint32_t n) {
    if (n < 32) sk_w_byte(w, (uint8_t)(0xa0 | n));
    else sk_w_be(w, 0xdb, n, 4);
    sk_w_raw(w, s, n);
}

static inline void sk_w_cstr(sk_writer *w, const char *s) { sk_w_str(w, s, (uint32_t)strlen(s)); }

static inline void sk_w_bin(sk_writer *w, const void *p, uint32_t n) {
    sk_w_be(w, 0xc6, n, 4);
    sk_w_raw(w, p, n);
}

/* ---- msgpack reader ------------------------------------------------------------ */

typedef struct {
    const uint8_t *p, *end;
    int err; /* set on truncated or unsupported input; every read then fails */
} sk_reader;

static inline sk_reader sk_reader_of(const void *p, uint32_t n) {
    sk_reader r = {(const uint8_t *)p, (const uint8_t *)p + n, 0};
    return r;
}

static inline uint64_t sk_r_be(sk_reader *r, int bytes) {
    if (r->err || r->end - r->p < bytes) { r->err = 1; return 0; }
    uint64_t v = 0;
    for (int i = 0; i < bytes; i++) v = (v << 8) | r->p[i];
    r->p += bytes;
    return v;
}

static inline uint8_t sk_r_tag(sk_reader *r) { return (uint8_t)sk_r_be(r, 1); }

/* Reads a str or bin header and returns its bytes (not NUL-terminated). */
static inline int sk_r_bytes(sk_reader *r, const uint8_t **s, uint32_t *n) {
    uint8_t t = sk_r_tag(r);
    uint64_t len;
    if ((t & 0xe0) == 0xa0) len = t & 0x1f;
    else if (t == 0xd9 || t == 0xc4) len = sk_r_be(r, 1);
    else if (t == 0xda || t == 0xc5) len = sk_r_be(r, 2);
    else if (t == 0xdb || t == 0xc6) len = sk_r_be(r, 4);
    else { r->err = 1; return 0; }
    if (r->err || (uint64_t)(r->end - r->p) < len) { r->err = 1; return 0; }
    *s = r->p;
    *n = (uint32_t)len;
    r->p += len;
    return 1;
}

static inline int sk_r_int(sk_reader *r, int64_t *v) {
    uint8_t t = sk_r_tag(r);
    if (t < 0x80) *v = t;
    else if (t >= 0xe0) *v = (int8_t)t;
    else if (t == 0xcc) *v = (int64_t)sk_r_be(r, 1);
    else if (t == 0xcd) *v = (int64_t)sk_r_be(r, 2);
    else if (t == 0xce) *v = (int64_t)sk_r_be(r, 4);
    else if (t == 0xcf) *v = (int64_t)sk_r_be(r, 8);
    else if (t == 0xd0) *v = (int8_t)sk_r_be(r, 1);
    else if (t == 0xd1) *v = (int16_t)sk_r_be(r, 2);
    else if (t == 0xd2) *v = (int32_t)sk_r_be(r, 4);
    else if (t == 0xd3) *v = (int64_t)sk_r_be(r, 8);
    else { r->err = 1; return 0; }
    return !r->err;
}

/* Reads a map header; returns the number of key/value pairs. */
static inline int sk_r_map(sk_reader *r, uint32_t *n) {
    uint8_t t = sk_r_tag(r);
    if ((t & 0xf0) == 0x80) *n = t & 0x0f;
    else if (t == 0xde) *n = (uint32_t)sk_r_be(r, 2);
    else if (t == 0xdf) *n = (uint32_t)sk_r_be(r, 4);
    else { r->err = 1; return 0; }
    return !r->err;
}

/* Skips one value of any type (depth-limited). */
static inline int sk_r_skip_d(sk_reader *r, int depth) {
    if (depth > 64) { r->err = 1; return 0; }
    uint8_t t = sk_r_tag(r);
    uint64_t n = 0, len = 0;
    if (r->err) return 0;
    if (t < 0x80 || t >= 0xe0 || t == 0xc0 || t == 0xc2 || t == 0xc3) return 1;
    if ((t & 0xf0) == 0x80) { n = 2 * (uint64_t)(t & 0x0f); goto items; }
    if ((t & 0xf0) == 0x90) { n = t & 0x0f; goto items; }
    if ((t & 0xe0) == 0xa0) { len = t & 0x1f; goto raw; }
    switch (t) {
    case 0xcc: case 0xd0: len = 1; goto raw;
    case 0xcd: case 0xd1: len = 2; goto raw;
    case 0xca: case 0xce: case 0xd2: len = 4; goto raw;
    case 0xcb: case 0xcf: case 0xd3: len = 8; goto raw;
    case 0xc4: case 0xd9: len = sk_r_be(r, 1); goto raw;
    case 0xc5: case 0xda: len = sk_r_be(r, 2); goto raw;
    case 0xc6: case 0xdb: len = sk_r_be(r, 4); goto raw;
    case 0xdc: n = sk_r_be(r, 2); goto items;
    case 0xdd: n = sk_r_be(r, 4); goto items;
    case 0xde: n = 2 * sk_r_be(r, 2); goto items;
    case 0xdf: n = 2 * sk_r_be(r, 4); goto items;
    default: r->err = 1; return 0; /* ext types are not part of the ABI */
    }
raw:
    if (r->err || (uint64_t)(r->end - r->p) < len) { r->err = 1; return 0; }
    r->p += len;
    return 1;
items:
    for (uint64_t i = 0; i < n && !r->err; i++) sk_r_skip_d(r, depth + 1);
    return !r->err;
}

static inline int sk_r_skip(sk_reader *r) { return sk_r_skip_d(r, 0); }

/* Positions a reader on the value of `key` in the map at r; returns 0 if absent. */
static inline int sk_find(sk_reader map, const char *key, sk_reader *value) {
    uint32_t n, kl = (uint32_t)strlen(key);
    if (!sk_r_map(&map, &n)) return 0;
    for (uint32_t i = 0; i < n; i++) {
        const uint8_t *k;
        uint32_t klen;
        if (!sk_r_bytes(&map, &k, &klen)) return 0;
        if (klen == kl && memcmp(k, key, kl) == 0) {
            *value = map;
            return 1;
        }
        if (!sk_r_skip(&map)) return 0;
    }
    return 0;
}

/* The raw msgpack bytes of the value of `key` (to copy it with sk_w_raw). */
static inline int sk_find_raw(sk_reader map, const char *key, const uint8_t **p, uint32_t *n) {
    sk_reader v;
    if (!sk_find(map, key, &v)) return 0;
    const uint8_t *start = v.p;
    if (!sk_r_skip(&v)) return 0;
    *p = start;
    *n = (uint32_t)(v.p - start);
    return 1;
}

/* ---- requests, responses, host calls ------------------------------------------------ */

typedef struct {
    const uint8_t *method, *skill_id, *caller_id, *state, *payload;
    uint32_t method_len, skill_id_len, caller_id_len, state_len, payload_len;
    int64_t deadline_ns;
} sk_request;

typedef struct {
    sk_writer payload;     /* msgpack of the output value; empty means null */
    const uint8_t *state;  /* a {schema_version, data} envelope; NULL keeps the current state */
    uint32_t state_len;
    int clear_state;       /* 1: reset the state to empty */
    sk_writer commands;    /* msgpack array items written with sk_w_* */
    uint32_t n_commands;
    char error[256];       /* non-empty: the call failed with this message */
    const char *llm_context;
} sk_response;

static inline int sk_method_is(const sk_request *req, const char *name) {
    uint32_t n = (uint32_t)strlen(name);
    return req->method_len == n && memcmp(req->method, name, n) == 0;
}

static inline void sk_fail(sk_response *res, const char *msg) {
    strncpy(res->error, msg, sizeof res->error - 1);
}

/* Encodes a state envelope around the msgpack `data`; the caller frees w.buf. */
static inline void sk_state_envelope(sk_writer *w, uint32_t schema_version, const uint8_t *data, uint32_t n) {
    sk_w_map(w, 2);
    sk_w_cstr(w, "schema_version");
    sk_w_int(w, schema_version);
    sk_w_cstr(w, "data");
    sk_w_bin(w, data, n);
}

/* Reads the `data` bytes out of a state envelope; returns 0 when there is no state. */
static inline int sk_state_data(const sk_request *req, const uint8_t **data, uint32_t *n) {
    if (!req->state_len) return 0;
    sk_reader v;
    if (!sk_find(sk_reader_of(req->state, req->state_len), "data", &v)) return 0;
    return sk_r_bytes(&v, data, n);
}

static inline uint64_t sk_packed(sk_writer *w) {
    if (w->err || !w->len) { free(w->buf); return 0; }
    return ((uint64_t)(uintptr_t)w->buf << 32) | w->len;
}

/* Calls a host import with the msgpack request in w; *out is freed with free(). */
static inline int sk_host_call(uint64_t (*fn)(uint32_t, uint32_t), const sk_writer *w,
                        const uint8_t **out, uint32_t *out_len) {
    uint64_t packed = fn((uint32_t)(uintptr_t)w->buf, w->len);
    *out = (const uint8_t *)(uintptr_t)(packed >> 32);
    *out_len = (uint32_t)(packed & 0xffffffffu);
    return *out_len != 0;
}

#define SK_HOST_IMPORT(name) \
    __attribute__((import_module("env"), import_name(#name))) uint64_t name(uint32_t, uint32_t)

void skill_on_describe(sk_writer *w);
void skill_on_call(const sk_request *req, sk_response *res);

#ifdef SKILLYARD_SKILL_IMPL

__attribute__((export_name("skill_alloc"))) uint32_t skill_alloc(uint32_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) __builtin_trap(); /* out of memory (the host reports its memory limit) */
    return (uint32_t)(uintptr_t)p;
}

__attribute__((export_name("skill_free"))) void skill_free(uint32_t p) {
    free((void *)(uintptr_t)p);
}

__attribute__((export_name("skill_describe"))) uint64_t skill_describe(void) {
    sk_writer w = {0};
    skill_on_describe(&w);
    return sk_packed(&w);
}

static inline int sk_key_is(const uint8_t *k, uint32_t n, const char *name) {
    uint32_t len = (uint32_t)strlen(name);
    return n == len && memcmp(k, name, len) == 0;
}

/* Reads a str/bin value (nil reads as empty); any other type leaves it empty. */
static inline void sk_take(sk_reader *v, const uint8_t **p, uint32_t *n) {
    if (v->p < v->end && *v->p == 0xc0) { v->p++; return; }
    const uint8_t *s;
    uint32_t len;
    sk_reader probe = *v;
    if (sk_r_bytes(&probe, &s, &len)) { *p = s; *n = len; *v = probe; }
    else sk_r_skip(v);
}

__attribute__((export_name("skill_handle"))) uint64_t skill_handle(uint32_t ptr, uint32_t len) {
    sk_request req;
    sk_response res;
    memset(&req, 0, sizeof req);
    memset(&res, 0, sizeof res);
    req.method = req.skill_id = req.caller_id = req.state = req.payload = (const uint8_t *)"";
    /* One pass over the request map: each field is read where it is found. */
    sk_reader m = sk_reader_of((const void *)(uintptr_t)ptr, len);
    uint32_t fields = 0;
    sk_r_map(&m, &fields);
    for (uint32_t i = 0; i < fields && !m.err; i++) {
        const uint8_t *k;
        uint32_t kn;
        if (!sk_r_bytes(&m, &k, &kn)) break;
        if (sk_key_is(k, kn, "method")) sk_take(&m, &req.method, &req.method_len);
        else if (sk_key_is(k, kn, "payload")) sk_take(&m, &req.payload, &req.payload_len);
        else if (sk_key_is(k, kn, "state")) sk_take(&m, &req.state, &req.state_len);
        else if (sk_key_is(k, kn, "skill_id")) sk_take(&m, &req.skill_id, &req.skill_id_len);
        else if (sk_key_is(k, kn, "caller_id")) sk_take(&m, &req.caller_id, &req.caller_id_len);
        else if (sk_key_is(k, kn, "deadline_ns")) sk_r_int(&m, &req.deadline_ns);
        else sk_r_skip(&m);
    }
    if (!req.method_len) sk_fail(&res, "malformed InvokeRequest: no method");
    else skill_on_call(&req, &res);

    sk_writer w = {0};
    uint32_t out_fields = 2 + (res.error[0] != 0) + (res.state || res.clear_state) +
                      (res.n_commands > 0) + (res.llm_context != 0);
    w.cap = res.payload.len + res.state_len + res.commands.len + 64; /* one allocation */
    w.buf = (uint8_t *)malloc(w.cap);
    if (!w.buf) w.cap = 0;
    sk_w_map(&w, out_fields);
    sk_w_cstr(&w, "version");
    sk_w_int(&w, 1);
    sk_w_cstr(&w, "payload");
    sk_w_bin(&w, res.payload.buf, res.payload.len);
    if (res.error[0]) { sk_w_cstr(&w, "error"); sk_w_cstr(&w, res.error); }
    if (res.state || res.clear_state) { sk_w_cstr(&w, "state"); sk_w_bin(&w, res.state, res.state_len); }
    if (res.n_commands) {
        sk_w_cstr(&w, "commands");
        sk_w_array(&w, res.n_commands);
        sk_w_raw(&w, res.commands.buf, res.commands.len);
    }
    if (res.llm_context) { sk_w_cstr(&w, "llm_context"); sk_w_cstr(&w, res.llm_context); }
    free(res.payload.buf);
    free(res.commands.buf);
    return sk_packed(&w);
}

#endif /* SKILLYARD_SKILL_IMPL */
#endif /* SKILLYARD_SKILL_H */
