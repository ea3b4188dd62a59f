/* tally: word statistics for a text, plus running totals kept in the skill state. */
#define SKILLYARD_SKILL_IMPL
#include "skillyard_skill.h"

#define TOP 5

typedef struct {
    const uint8_t *word;
    uint32_t len, count;
} slot;

static void param(sk_writer *w, const char *name, const char *type, const char *desc, int required) {
    sk_w_map(w, 4);
    sk_w_cstr(w, "name");
    sk_w_cstr(w, name);
    sk_w_cstr(w, "type");
    sk_w_cstr(w, type);
    sk_w_cstr(w, "description");
    sk_w_cstr(w, desc);
    sk_w_cstr(w, "required");
    sk_w_bool(w, required);
}

static void method(sk_writer *w, const char *name, const char *desc, int params) {
    sk_w_map(w, params ? 3 : 2);
    sk_w_cstr(w, "name");
    sk_w_cstr(w, name);
    sk_w_cstr(w, "description");
    sk_w_cstr(w, desc);
    if (params) {
        sk_w_cstr(w, "params");
        sk_w_array(w, 1);
        param(w, "text", "string", "The text to analyse", 1);
    }
}

void skill_on_describe(sk_writer *w) {
    sk_w_map(w, 5);
    sk_w_cstr(w, "version");
    sk_w_int(w, 1);
    sk_w_cstr(w, "skill_id");
    sk_w_cstr(w, "tally");
    sk_w_cstr(w, "skill_version");
    sk_w_cstr(w, "1.0.0");
    sk_w_cstr(w, "description");
    sk_w_cstr(w, "Word statistics with running totals, compiled from C to WebAssembly");
    sk_w_cstr(w, "methods");
    sk_w_array(w, 3);
    method(w, "count", "Count words, lines, bytes and distinct words; list the most frequent", 1);
    method(w, "totals", "Documents and words counted so far", 0);
    method(w, "reset", "Forget the running totals", 0);
}

static int is_word(uint8_t c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '\'' || c >= 0x80;
}

static uint8_t lower(uint8_t c) { return (c >= 'A' && c <= 'Z') ? (uint8_t)(c + 32) : c; }

static uint32_t hash(const uint8_t *p, uint32_t n) {
    uint32_t h = 2166136261u;
    for (uint32_t i = 0; i < n; i++) h = (h ^ lower(p[i])) * 16777619u;
    return h;
}

static int same(const uint8_t *a, const uint8_t *b, uint32_t n) {
    for (uint32_t i = 0; i < n; i++)
        if (lower(a[i]) != lower(b[i])) return 0;
    return 1;
}

/* State: msgpack [documents, words]. */
static sk_writer state_buf;

static void totals(const sk_request *req, int64_t *docs, int64_t *words) {
    const uint8_t *data;
    uint32_t n;
    *docs = *words = 0;
    if (!sk_state_data(req, &data, &n)) return;
    sk_reader r = sk_reader_of(data, n);
    if (sk_r_tag(&r) != 0x92) return;
    sk_r_int(&r, docs);
    sk_r_int(&r, words);
}

static void save(sk_response *res, int64_t docs, int64_t words) {
    sk_writer data = {0};
    sk_w_array(&data, 2);
    sk_w_int(&data, docs);
    sk_w_int(&data, words);
    free(state_buf.buf);
    memset(&state_buf, 0, sizeof state_buf);
    sk_state_envelope(&state_buf, 1, data.buf, data.len);
    free(data.buf);
    res->state = state_buf.buf;
    res->state_len = state_buf.len;
}

static void count(const sk_request *req, sk_response *res) {
    sk_reader v;
    const uint8_t *text;
    uint32_t n;
    if (!sk_find(sk_reader_of(req->payload, req->payload_len), "text", &v) ||
        !sk_r_bytes(&v, &text, &n)) {
        sk_fail(res, "argument 'text' (a string) is required");
        return;
    }
    uint32_t cap = 64;
    while (cap < n) cap *= 2;
    slot *table = (slot *)calloc(cap, sizeof(slot));
    if (!table) { sk_fail(res, "out of memory"); return; }
    uint32_t words = 0, distinct = 0, lines = n ? 1 : 0;
    for (uint32_t i = 0; i < n;) {
        if (text[i] == '\n' && i + 1 < n) lines++;
        if (!is_word(text[i])) { i++; continue; }
        uint32_t start = i;
        while (i < n && is_word(text[i])) i++;
        uint32_t len = i - start;
        words++;
        for (uint32_t h = hash(text + start, len) & (cap - 1);; h = (h + 1) & (cap - 1)) {
            if (!table[h].word) {
                table[h].word = text + start;
                table[h].len = len;
                table[h].count = 1;
                distinct++;
                break;
            }
            if (table[h].len == len && same(table[h].word, text + start, len)) {
                table[h].count++;
                break;
            }
        }
    }
    slot top[TOP];
    memset(top, 0, sizeof top);
    for (uint32_t h = 0; h < cap; h++) {
        if (!table[h].word) continue;
        for (int k = 0; k < TOP; k++) {
            if (table[h].count > top[k].count) {
                memmove(&top[k + 1], &top[k], (TOP - 1 - k) * sizeof(slot));
                top[k] = table[h];
                break;
            }
        }
    }
    int ntop = 0;
    while (ntop < TOP && top[ntop].count) ntop++;
    int64_t docs, total;
    totals(req, &docs, &total);
    save(res, docs + 1, total + words);

    sk_writer *w = &res->payload;
    sk_w_map(w, 5);
    sk_w_cstr(w, "words");
    sk_w_int(w, words);
    sk_w_cstr(w, "distinct");
    sk_w_int(w, distinct);
    sk_w_cstr(w, "lines");
    sk_w_int(w, lines);
    sk_w_cstr(w, "bytes");
    sk_w_int(w, n);
    sk_w_cstr(w, "top");
    sk_w_array(w, (uint32_t)ntop);
    for (int k = 0; k < ntop; k++) {
        char buf[64];
        uint32_t len = top[k].len < sizeof buf ? top[k].len : sizeof buf;
        while (len < top[k].len && len && (top[k].word[len] & 0xc0) == 0x80) len--; /* whole UTF-8 */
        for (uint32_t j = 0; j < len; j++) buf[j] = (char)lower(top[k].word[j]);
        sk_w_map(w, 2);
        sk_w_cstr(w, "word");
        sk_w_str(w, buf, len);
        sk_w_cstr(w, "count");
        sk_w_int(w, top[k].count);
    }
    free(table);
}

void skill_on_call(const sk_request *req, sk_response *res) {
    if (sk_method_is(req, "count")) {
        count(req, res);
    } else if (sk_method_is(req, "totals")) {
        int64_t docs, words;
        totals(req, &docs, &words);
        sk_w_map(&res->payload, 2);
        sk_w_cstr(&res->payload, "documents");
        sk_w_int(&res->payload, docs);
        sk_w_cstr(&res->payload, "words");
        sk_w_int(&res->payload, words);
    } else if (sk_method_is(req, "reset")) {
        res->clear_state = 1;
        sk_w_map(&res->payload, 1);
        sk_w_cstr(&res->payload, "reset");
        sk_w_bool(&res->payload, 1);
    } else {
        sk_fail(res, "unknown method");
    }
}
