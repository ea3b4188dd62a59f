/* The smallest useful guest: returns its arguments (the bench and the conformance suite use it). */
#define SKILLYARD_SKILL_IMPL
#include "skillyard_skill.h"

void skill_on_describe(sk_writer *w) {
    sk_w_map(w, 3);
    sk_w_cstr(w, "version");
    sk_w_int(w, 1);
    sk_w_cstr(w, "skill_id");
    sk_w_cstr(w, "echo");
    sk_w_cstr(w, "methods");
    sk_w_array(w, 1);
    sk_w_map(w, 2);
    sk_w_cstr(w, "name");
    sk_w_cstr(w, "echo");
    sk_w_cstr(w, "description");
    sk_w_cstr(w, "Return the arguments unchanged");
}

void skill_on_call(const sk_request *req, sk_response *res) {
    if (sk_method_is(req, "echo")) sk_w_raw(&res->payload, req->payload, req->payload_len);
    else sk_fail(res, "unknown method");
}
