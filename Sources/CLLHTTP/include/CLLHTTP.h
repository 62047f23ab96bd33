/* llhttp 9.3.0 (https://github.com/nodejs/llhttp), MIT licensed (LICENSE), as swift-nio 2.101.3
 * vendors it (Sources/CNIOLLHTTP), with its prefixes changed (c_nio_ and llhttp_ to spx_llhttp_,
 * HPE_ and HTTP_ to SPX_HPE_ and SPX_HTTP_) so that this copy and NIO's live in one binary
 * and one Swift module without clashing. The worker loops parse HTTP/1.1 with it. */
#ifndef SPX_CLLHTTP_H
#define SPX_CLLHTTP_H

#include "spx_llhttp.h"

static inline spx_llhttp_errno_t spx_llhttp_execute_bytes(spx_llhttp_t *parser, const void *data, size_t len) {
    return spx_llhttp_execute(parser, (const char *)data, len);
}

#endif
