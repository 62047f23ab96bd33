/* The part both loops share: a fixed keep-alive answer per request, requests counted by their
 * blank line (wrk sends GETs without bodies, one at a time per connection). What differs
 * between epoll.c and uv.c is only how a socket's readiness reaches this code. */
#include <stdint.h>
#include <string.h>
#include <sys/types.h>

static const char ANSWER[] =
    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 16\r\n\r\n{\"status\":\"ok\"}\n";

/* Requests completed by `data` (the count of "\r\n\r\n"), given the tail of the last read. */
static int count_requests(const char *data, ssize_t n, uint32_t *tail) {
    int requests = 0;
    uint32_t t = *tail;
    for (ssize_t i = 0; i < n; i++) {
        t = (t << 8) | (uint8_t)data[i];
        if (t == 0x0d0a0d0a) requests++;
    }
    *tail = t;
    return requests;
}
