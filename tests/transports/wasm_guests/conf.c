/* The conformance-suite guest: echo, slow, flood, fail and badout (tests/transports). */
#define SKILLYARD_SKILL_IMPL
#include "skillyard_skill.h"

#define FLOOD_BYTES 50000

void skill_on_describe(sk_writer *w) {
    static const char *names[] = {"echo", "slow", "flood", "fail", "badout"};
    sk_w_map(w, 3);
    sk_w_cstr(w, "version");
    sk_w_int(w, 1);
    sk_w_cstr(w, "skill_id");
    sk_w_cstr(w, "conf");
    sk_w_cstr(w, "methods");
    sk_w_array(w, 5);
    for (int i = 0; i < 5; i++) {
        sk_w_map(w, 1);
        sk_w_cstr(w, "name");
        sk_w_cstr(w, names[i]);
    }
}

void skill_on_call(const sk_request *req, sk_response *res) {
    sk_writer *out = &res->payload;
    if (sk_method_is(req, "echo")) {
        sk_w_map(out, 1);
        sk_w_cstr(out, "echo");
        sk_w_raw(out, req->payload, req->payload_len);
    } else if (sk_method_is(req, "slow")) {
        volatile unsigned spin = 0;
        for (;;) spin++; /* stopped by the host's deadline */
    } else if (sk_method_is(req, "flood")) {
        static char text[FLOOD_BYTES];
        memset(text, 'x', sizeof text);
        sk_w_str(out, text, sizeof text);
    } else if (sk_method_is(req, "fail")) {
        sk_fail(res, "conformance failure");
    } else if (sk_method_is(req, "badout")) {
        sk_w_map(out, 1);
        sk_w_cstr(out, "wrong");
        sk_w_int(out, 1);
    } else {
        sk_fail(res, "unknown method");
    }
}
