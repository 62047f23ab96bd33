/* One thread, libuv 1.44 (Debian's libuv1-dev), two ways:
 *   tcp  - libuv's own streams (uv_tcp_t, uv_read_start, uv_try_write): libuv reads.
 *   poll - uv_poll_t on a socket the program reads itself: the only way libuv can watch a
 *          descriptor it did not open, which is what curl's sockets need (multi-uv.c). */
#include "common.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <uv.h>

static uv_loop_t *loop;
static uv_tcp_t server;
static int use_poll;
static char buf[65536];

struct conn { uv_tcp_t tcp; uv_poll_t poll; int fd; uint32_t tail; int handles; };

/* Freed once every handle of the connection has closed. */
static void on_close(uv_handle_t *handle) {
    struct conn *c = handle->data;
    if (--c->handles == 0) free(c);
}

static void answer(struct conn *c, int requests) {
    uv_buf_t out = uv_buf_init((char *)ANSWER, sizeof ANSWER - 1);
    for (int r = 0; r < requests; r++) {
        if (use_poll) (void)!write(c->fd, ANSWER, sizeof ANSWER - 1);
        else uv_try_write((uv_stream_t *)&c->tcp, &out, 1);
    }
}

static void alloc_cb(uv_handle_t *handle, size_t suggested, uv_buf_t *b) {
    (void)handle; (void)suggested;
    *b = uv_buf_init(buf, sizeof buf);
}

static void read_cb(uv_stream_t *stream, ssize_t n, const uv_buf_t *b) {
    struct conn *c = stream->data;
    if (n < 0) { uv_close((uv_handle_t *)stream, on_close); return; }
    answer(c, count_requests(b->base, n, &c->tail));
}

static void poll_cb(uv_poll_t *p, int status, int events) {
    struct conn *c = p->data;
    (void)events;
    /* Level-triggered: one read per wake; whatever is left wakes the loop again. */
    ssize_t got = status < 0 ? -1 : read(c->fd, buf, sizeof buf);
    if (got < 0 && status >= 0 && errno == EAGAIN) return;
    if (got <= 0) {
        uv_poll_stop(p);
        uv_close((uv_handle_t *)&c->tcp, on_close);
        uv_close((uv_handle_t *)p, on_close);
        return;
    }
    answer(c, count_requests(buf, got, &c->tail));
}

static void on_connection(uv_stream_t *s, int status) {
    if (status < 0) return;
    struct conn *c = calloc(1, sizeof *c);
    uv_tcp_init(loop, &c->tcp);
    c->tcp.data = c;
    c->poll.data = c;
    c->handles = 1;
    if (uv_accept(s, (uv_stream_t *)&c->tcp)) { uv_close((uv_handle_t *)&c->tcp, on_close); return; }
    uv_tcp_nodelay(&c->tcp, 1);
    if (use_poll) {
        uv_fileno((uv_handle_t *)&c->tcp, &c->fd);
        uv_poll_init_socket(loop, &c->poll, c->fd);
        c->handles = 2;
        uv_poll_start(&c->poll, UV_READABLE | UV_DISCONNECT, poll_cb);
    } else {
        uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb);
    }
}

int main(int argc, char **argv) {
    int port = argc > 1 ? atoi(argv[1]) : 18101;
    use_poll = argc > 2 && argv[2][0] == 'p';
    loop = uv_default_loop();
    uv_tcp_init(loop, &server);
    struct sockaddr_in addr;
    uv_ip4_addr("127.0.0.1", port, &addr);
    if (uv_tcp_bind(&server, (const struct sockaddr *)&addr, 0) || uv_listen((uv_stream_t *)&server, 4096, on_connection)) {
        fprintf(stderr, "listen failed\n");
        return 1;
    }
    return uv_run(loop, UV_RUN_DEFAULT);
}
