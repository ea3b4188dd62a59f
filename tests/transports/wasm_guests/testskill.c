/* A C guest the WASM transport tests drive: echo, state, commands, host imports, stdio. */
#define SKILLYARD_SKILL_IMPL
#include "skillyard_skill.h"

#include <errno.h>
#include <stdio.h>

SK_HOST_IMPORT(fs_read);
SK_HOST_IMPORT(env_get);
SK_HOST_IMPORT(log_write);

static void method(sk_writer *w, const char *name, const char *desc, int flags) {
    sk_w_map(w, flags ? 3 : 2);
    sk_w_cstr(w, "name");
    sk_w_cstr(w, name);
    sk_w_cstr(w, "description");
    sk_w_cstr(w, desc);
    if (flags) {
        sk_w_cstr(w, "private_callback");
        sk_w_bool(w, 1);
    }
}

void skill_on_describe(sk_writer *w) {
    sk_w_map(w, 5);
    sk_w_cstr(w, "version");
    sk_w_int(w, 1);
    sk_w_cstr(w, "skill_id");
    sk_w_cstr(w, "testskill");
    sk_w_cstr(w, "skill_version");
    sk_w_cstr(w, "1.2.3");
    sk_w_cstr(w, "description");
    sk_w_cstr(w, "Test guest for the WASM transport");
    sk_w_cstr(w, "methods");
    sk_w_array(w, 12);
    /* echo declares one parameter so the card gets a schema */
    sk_w_map(w, 3);
    sk_w_cstr(w, "name");
    sk_w_cstr(w, "echo");
    sk_w_cstr(w, "description");
    sk_w_cstr(w, "Return the arguments");
    sk_w_cstr(w, "params");
    sk_w_array(w, 1);
    sk_w_map(w, 3);
    sk_w_cstr(w, "name");
    sk_w_cstr(w, "text");
    sk_w_cstr(w, "type");
    sk_w_cstr(w, "string");
    sk_w_cstr(w, "required");
    sk_w_bool(w, 0);
    method(w, "count", "Count calls in the skill state", 0);
    method(w, "command", "Return the commands given in the arguments", 0);
    method(w, "on_result", "Callback: return what it was given", 1);
    method(w, "on_event", "Subscriber: count and return the event", 0);
    method(w, "read", "Read a file through the fs_read host import", 0);
    method(w, "env", "Read an environment variable through env_get", 0);
    method(w, "print", "Write to stdout and stderr", 0);
    method(w, "fail", "Report an error", 0);
    method(w, "wasi_read", "Read a file with WASI fopen", 0);
    method(w, "wasi_write", "Write a file with WASI fopen", 0);
    method(w, "wasi_env", "Count the WASI environment and look for HOME and PATH", 0);
}

/* Copies the string argument `key` into buf (NUL-terminated); 0 when missing. */
static int str_arg(const sk_request *req, const char *key, char *buf, uint32_t cap) {
    sk_reader v;
    const uint8_t *s;
    uint32_t n;
    if (!sk_find(sk_reader_of(req->payload, req->payload_len), key, &v) || !sk_r_bytes(&v, &s, &n) ||
        n >= cap)
        return 0;
    memcpy(buf, s, n);
    buf[n] = 0;
    return 1;
}

static void wasi_file(const sk_request *req, sk_response *res, int write) {
    char path[512], text[512];
    if (!str_arg(req, "path", path, sizeof path)) { sk_fail(res, "missing path"); return; }
    FILE *f = fopen(path, write ? "w" : "r");
    if (!f) {
        char msg[600];
        snprintf(msg, sizeof msg, "cannot open %s: %s", path, strerror(errno));
        sk_fail(res, msg);
        return;
    }
    sk_w_map(&res->payload, 1);
    if (write) {
        if (!str_arg(req, "text", text, sizeof text)) text[0] = 0;
        size_t n = fwrite(text, 1, strlen(text), f);
        sk_w_cstr(&res->payload, "written");
        sk_w_int(&res->payload, (int64_t)n);
    } else {
        size_t n = fread(text, 1, sizeof text, f);
        sk_w_cstr(&res->payload, "text");
        sk_w_str(&res->payload, text, (uint32_t)n);
    }
    fclose(f);
}

static int64_t load_count(const sk_request *req) {
    const uint8_t *data;
    uint32_t n;
    int64_t v = 0;
    if (sk_state_data(req, &data, &n)) {
        sk_reader r = sk_reader_of(data, n);
        sk_r_int(&r, &v);
    }
    return v;
}

static sk_writer state_buf;

static void save_count(sk_response *res, int64_t v) {
    sk_writer data = {0};
    sk_w_int(&data, v);
    free(state_buf.buf);
    memset(&state_buf, 0, sizeof state_buf);
    sk_state_envelope(&state_buf, 1, data.buf, data.len);
    free(data.buf);
    res->state = state_buf.buf;
    res->state_len = state_buf.len;
}

/* Calls a host import with {key: value-of-args[key]} and returns the host's answer as output. */
static void host_passthrough(const sk_request *req, sk_response *res,
                             uint64_t (*fn)(uint32_t, uint32_t), const char *key) {
    const uint8_t *val;
    uint32_t n;
    if (!sk_find_raw(sk_reader_of(req->payload, req->payload_len), key, &val, &n)) {
        sk_fail(res, "missing argument");
        return;
    }
    sk_writer w = {0};
    sk_w_map(&w, 1);
    sk_w_cstr(&w, key);
    sk_w_raw(&w, val, n);
    const uint8_t *out;
    uint32_t out_len;
    if (sk_host_call(fn, &w, &out, &out_len)) {
        sk_reader e;
        const uint8_t *msg;
        uint32_t mlen;
        if (sk_find(sk_reader_of(out, out_len), "error", &e) && sk_r_bytes(&e, &msg, &mlen)) {
            char buf[200];
            uint32_t k = mlen < sizeof buf - 1 ? mlen : sizeof buf - 1;
            memcpy(buf, msg, k);
            buf[k] = 0;
            sk_fail(res, buf);
        } else {
            sk_w_raw(&res->payload, out, out_len);
        }
        free((void *)out);
    }
    free(w.buf);
}

void skill_on_call(const sk_request *req, sk_response *res) {
    sk_reader args = sk_reader_of(req->payload, req->payload_len);
    if (sk_method_is(req, "echo")) {
        sk_w_raw(&res->payload, req->payload, req->payload_len);
    } else if (sk_method_is(req, "count")) {
        int64_t v = load_count(req) + 1;
        save_count(res, v);
        sk_w_map(&res->payload, 1);
        sk_w_cstr(&res->payload, "count");
        sk_w_int(&res->payload, v);
    } else if (sk_method_is(req, "command")) {
        sk_reader cmds;
        uint8_t t;
        if (!sk_find(args, "commands", &cmds) || cmds.p >= cmds.end) {
            sk_fail(res, "commands missing");
            return;
        }
        t = *cmds.p;
        uint32_t n = (t & 0xf0) == 0x90 ? (t & 0x0f) : 0;
        cmds.p++; /* the test sends fixarrays */
        const uint8_t *start = cmds.p;
        for (uint32_t i = 0; i < n; i++) sk_r_skip(&cmds);
        sk_w_raw(&res->commands, start, (uint32_t)(cmds.p - start));
        res->n_commands = n;
        const uint8_t *out;
        uint32_t out_len;
        if (sk_find_raw(args, "output", &out, &out_len)) sk_w_raw(&res->payload, out, out_len);
    } else if (sk_method_is(req, "on_result")) {
        sk_w_map(&res->payload, 1);
        sk_w_cstr(&res->payload, "callback_got");
        sk_w_raw(&res->payload, req->payload, req->payload_len);
    } else if (sk_method_is(req, "on_event")) {
        int64_t v = load_count(req) + 1;
        save_count(res, v);
        sk_w_map(&res->payload, 2);
        sk_w_cstr(&res->payload, "events");
        sk_w_int(&res->payload, v);
        sk_w_cstr(&res->payload, "got");
        sk_w_raw(&res->payload, req->payload, req->payload_len);
    } else if (sk_method_is(req, "read")) {
        host_passthrough(req, res, fs_read, "path");
    } else if (sk_method_is(req, "env")) {
        host_passthrough(req, res, env_get, "name");
    } else if (sk_method_is(req, "print")) {
        printf("hello from stdout\n");
        fflush(stdout);
        fprintf(stderr, "hello from stderr\n");
        sk_writer w = {0};
        sk_w_map(&w, 2);
        sk_w_cstr(&w, "level");
        sk_w_cstr(&w, "info");
        sk_w_cstr(&w, "msg");
        sk_w_cstr(&w, "hello from log_write");
        const uint8_t *out;
        uint32_t out_len;
        if (sk_host_call(log_write, &w, &out, &out_len)) free((void *)out);
        free(w.buf);
        sk_w_map(&res->payload, 1);
        sk_w_cstr(&res->payload, "printed");
        sk_w_bool(&res->payload, 1);
    } else if (sk_method_is(req, "wasi_read")) {
        wasi_file(req, res, 0);
    } else if (sk_method_is(req, "wasi_write")) {
        wasi_file(req, res, 1);
    } else if (sk_method_is(req, "wasi_env")) {
        extern char **environ;
        int64_t n = 0;
        for (char **e = environ; e && *e; e++) n++;
        sk_w_map(&res->payload, 3);
        sk_w_cstr(&res->payload, "count");
        sk_w_int(&res->payload, n);
        sk_w_cstr(&res->payload, "home");
        sk_w_bool(&res->payload, getenv("HOME") != 0);
        sk_w_cstr(&res->payload, "path");
        sk_w_bool(&res->payload, getenv("PATH") != 0);
    } else if (sk_method_is(req, "fail")) {
        sk_fail(res, "asked to fail");
    } else {
        sk_fail(res, "unknown method");
    }
}
