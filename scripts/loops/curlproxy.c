#define _GNU_SOURCE
/* The floor of forwarding with libcurl on this machine, in C: issue 13's design with none of
 * spotify-proxy's own work. N threads, each an epoll loop that owns a SO_REUSEPORT listener, its
 * clients and its own curl multi handle driven with curl_multi_socket_action
 * (CURLMOPT_SOCKETFUNCTION/TIMERFUNCTION), curl's idle sockets left in the epoll set
 * (CURLOPT_CLOSESOCKETFUNCTION reports real closes), one CURLSH for DNS and TLS sessions.
 * libcurl is used as spotify-proxy uses it (UpstreamTransfer.configure): pooled easy handles,
 * curl_easy_reset on the way back (libcurl counts a handle's dead-connection retries until a
 * reset), the same options set for every transfer, a header list with the token, a request id,
 * "Accept:" and "Expect:", a header callback. Requests are parsed with the llhttp spotify-proxy
 * vendors (Sources/CLLHTTP). Only what a benchmark needs: GETs, one at a time per connection, the
 * upstream's answer buffered whole and sent with its status, a Content-Type and a Content-Length;
 * no limits, no header forwarding, no link rewriting.
 *   curlproxy PORT UPSTREAM-BASE [THREADS]   e.g. curlproxy 18087 http://127.0.0.1:18080 2 */
#include "CLLHTTP.h"
#include <curl/curl.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define CURL_TAG (1ULL << 63)
#define MAX_FDS 65536

static int port;
static const char *base;
static size_t base_len;
static CURLSH *share;
static pthread_mutex_t share_locks[CURL_LOCK_DATA_LAST];

struct buf { char *data; size_t len, cap; };

static void buf_append(struct buf *b, const void *p, size_t n) {
    if (b->len + n > b->cap) {
        b->cap = (b->len + n) * 2;
        b->data = realloc(b->data, b->cap);
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
}

struct worker;

struct conn {
    int fd;
    struct worker *w;
    spx_llhttp_t parser;
    struct buf in, url, body, out;
    size_t in_used, out_sent;
    CURL *easy; /* while a transfer runs */
    struct curl_slist *headers; /* the running transfer's */
    int closed; /* to be closed */
    int dead;   /* closed: freed after this batch of events */
    struct conn *next_dead;
};

struct worker {
    int ep, lfd;
    CURLM *multi;
    long long deadline_ms; /* curl's one timer, on CLOCK_MONOTONIC; -1: none */
    uint8_t registered[MAX_FDS]; /* curl socket in the epoll set: 0 no, 1 wanted by curl, 2 idle */
    CURL *pool[512];
    int pooled;
    unsigned long long requests;
    struct conn *dead; /* closed in this batch of events */
};

static spx_llhttp_settings_t settings;

static int on_url(spx_llhttp_t *p, const char *at, size_t n) {
    struct conn *c = p->data;
    buf_append(&c->url, at, n);
    return 0;
}

static int on_message_begin(spx_llhttp_t *p) {
    ((struct conn *)p->data)->url.len = 0;
    return 0;
}

static int on_message_complete(spx_llhttp_t *p) { return SPX_HPE_PAUSED; }

static void share_lock(CURL *h, curl_lock_data d, curl_lock_access a, void *u) { pthread_mutex_lock(&share_locks[d]); }
static void share_unlock(CURL *h, curl_lock_data d, void *u) { pthread_mutex_unlock(&share_locks[d]); }

static size_t on_header(char *p, size_t size, size_t n, void *u) { return size * n; }

static size_t on_body(char *p, size_t size, size_t n, void *u) {
    buf_append(&((struct conn *)u)->body, p, size * n);
    return size * n;
}

static int on_close_socket(void *u, curl_socket_t fd) {
    struct worker *w = u;
    if (w->registered[fd]) { epoll_ctl(w->ep, EPOLL_CTL_DEL, fd, NULL); w->registered[fd] = 0; }
    return close(fd);
}

static int on_socket(CURL *e, curl_socket_t fd, int what, void *u, void *sp) {
    struct worker *w = u;
    if (what == CURL_POLL_REMOVE) {
        if (w->registered[fd]) w->registered[fd] = 2; /* left in the set; an event on it is dropped */
        return 0;
    }
    struct epoll_event ev = { .events = (what & CURL_POLL_IN ? EPOLLIN : 0) | (what & CURL_POLL_OUT ? EPOLLOUT : 0),
                              .data.u64 = CURL_TAG | (uint64_t)fd };
    /* A socket curl closed without the close callback may have left its number registered. */
    if (!w->registered[fd] || (epoll_ctl(w->ep, EPOLL_CTL_MOD, fd, &ev) < 0 && errno == ENOENT))
        epoll_ctl(w->ep, EPOLL_CTL_ADD, fd, &ev);
    w->registered[fd] = 1;
    return 0;
}

static long long now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000LL + t.tv_nsec / 1000000;
}

static int on_timer(CURLM *m, long ms, void *u) {
    ((struct worker *)u)->deadline_ms = ms < 0 ? -1 : now_ms() + ms;
    return 0;
}

/* A pooled (reset) or new handle, with every option spotify-proxy sets for a GET. */
static CURL *easy_for(struct conn *c, const char *url) {
    struct worker *w = c->w;
    CURL *e = w->pooled > 0 ? w->pool[--w->pooled] : curl_easy_init();
    curl_easy_setopt(e, CURLOPT_CLOSESOCKETFUNCTION, on_close_socket);
    curl_easy_setopt(e, CURLOPT_CLOSESOCKETDATA, w);
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_SHARE, share);
    curl_easy_setopt(e, CURLOPT_PATH_AS_IS, 1L);
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
    curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");
    curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, 120000L);
    curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME, 30L);
    curl_easy_setopt(e, CURLOPT_PROXY, "");
    curl_easy_setopt(e, CURLOPT_NOPROXY, "");
    curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
    char id[64];
    snprintf(id, sizeof id, "X-Request-Id: %016llx", ++w->requests);
    c->headers = curl_slist_append(NULL, "Authorization: Bearer static-token");
    c->headers = curl_slist_append(c->headers, id);
    c->headers = curl_slist_append(c->headers, "Accept:");
    c->headers = curl_slist_append(c->headers, "Expect:");
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, c->headers);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, c);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, c);
    curl_easy_setopt(e, CURLOPT_PRIVATE, c);
    return e;
}

static void give_back(struct conn *c) {
    curl_multi_remove_handle(c->w->multi, c->easy);
    curl_easy_reset(c->easy);
    c->w->pool[c->w->pooled++] = c->easy;
    c->easy = NULL;
    curl_slist_free_all(c->headers);
    c->headers = NULL;
}

/* Closes the client; its memory is freed after the batch of events, which may still name it. */
static void conn_close(struct conn *c) {
    if (c->easy) give_back(c);
    epoll_ctl(c->w->ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->dead = 1;
    c->next_dead = c->w->dead;
    c->w->dead = c;
}

static void free_dead(struct worker *w) {
    while (w->dead) {
        struct conn *c = w->dead;
        w->dead = c->next_dead;
        free(c->in.data); free(c->url.data); free(c->body.data); free(c->out.data);
        free(c);
    }
}

static void conn_flush(struct conn *c) {
    while (c->out_sent < c->out.len) {
        ssize_t n = send(c->fd, c->out.data + c->out_sent, c->out.len - c->out_sent, MSG_NOSIGNAL);
        if (n < 0) { if (errno != EAGAIN) c->closed = 1; return; }
        c->out_sent += n;
    }
    c->out.len = c->out_sent = 0;
}

/* Parses what has been read; starts the transfer of a complete request. */
static void conn_parse(struct conn *c) {
    if (c->easy || c->out.len || c->in_used == c->in.len) return;
    spx_llhttp_errno_t err = spx_llhttp_execute(&c->parser, c->in.data + c->in_used, c->in.len - c->in_used);
    if (err == SPX_HPE_OK) { c->in.len = c->in_used = 0; return; }
    if (err != SPX_HPE_PAUSED) { c->closed = 1; return; }
    c->in_used = spx_llhttp_get_error_pos(&c->parser) - c->in.data;
    if (c->in_used == c->in.len) c->in.len = c->in_used = 0;
    spx_llhttp_resume(&c->parser);
    char url[4096];
    if (base_len + c->url.len >= sizeof url) { c->closed = 1; return; }
    memcpy(url, base, base_len);
    memcpy(url + base_len, c->url.data, c->url.len);
    url[base_len + c->url.len] = 0;
    c->body.len = 0;
    c->easy = easy_for(c, url);
    curl_multi_add_handle(c->w->multi, c->easy);
}

static void finished(struct worker *w) {
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(w->multi, &left))) {
        if (m->msg != CURLMSG_DONE) continue;
        struct conn *c;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&c);
        long status = 502;
        if (m->data.result == CURLE_OK) curl_easy_getinfo(m->easy_handle, CURLINFO_RESPONSE_CODE, &status);
        give_back(c);
        char head[160];
        int n = snprintf(head, sizeof head, "HTTP/1.1 %ld \r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: %zu\r\n\r\n", status, c->body.len);
        buf_append(&c->out, head, n);
        buf_append(&c->out, c->body.data, c->body.len);
        conn_flush(c);
        if (!c->closed) conn_parse(c);
        if (c->closed) conn_close(c);
    }
}

static void *run(void *arg) {
    struct worker *w = calloc(1, sizeof *w);
    w->deadline_ms = -1;
    w->lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int one = 1;
    setsockopt(w->lfd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    struct sockaddr_in addr = { .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    if (bind(w->lfd, (struct sockaddr *)&addr, sizeof addr) || listen(w->lfd, 4096)) { perror("listen"); exit(1); }
    w->ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event lev = { .events = EPOLLIN, .data.ptr = NULL };
    epoll_ctl(w->ep, EPOLL_CTL_ADD, w->lfd, &lev);
    w->multi = curl_multi_init();
    curl_multi_setopt(w->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(w->multi, CURLMOPT_SOCKETDATA, w);
    curl_multi_setopt(w->multi, CURLMOPT_TIMERFUNCTION, on_timer);
    curl_multi_setopt(w->multi, CURLMOPT_TIMERDATA, w);
    curl_multi_setopt(w->multi, CURLMOPT_MAXCONNECTS, 1024L);
    static __thread char rbuf[65536];
    struct epoll_event events[256];
    int running;
    for (;;) {
        int wait = -1;
        if (w->deadline_ms >= 0) { long long left = w->deadline_ms - now_ms(); wait = left > 0 ? (int)left : 0; }
        int n = epoll_wait(w->ep, events, 256, wait);
        for (int i = 0; i < n; i++) {
            uint64_t tag = events[i].data.u64;
            if (tag & CURL_TAG) {
                int fd = (int)(tag & ~CURL_TAG);
                if (w->registered[fd] == 2) { epoll_ctl(w->ep, EPOLL_CTL_DEL, fd, NULL); w->registered[fd] = 0; continue; }
                int mask = (events[i].events & EPOLLIN ? CURL_CSELECT_IN : 0) | (events[i].events & EPOLLOUT ? CURL_CSELECT_OUT : 0) |
                           (events[i].events & (EPOLLERR | EPOLLHUP) ? CURL_CSELECT_ERR : 0);
                curl_multi_socket_action(w->multi, fd, mask, &running);
                finished(w);
                continue;
            }
            struct conn *c = events[i].data.ptr;
            if (c != NULL && c->dead) continue;
            if (c == NULL) {
                for (int k = 0; k < 64; k++) {
                    int fd = accept4(w->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (fd < 0) break;
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    c = calloc(1, sizeof *c);
                    c->fd = fd;
                    c->w = w;
                    spx_llhttp_init(&c->parser, SPX_HTTP_REQUEST, &settings);
                    c->parser.data = c;
                    struct epoll_event cev = { .events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = c };
                    epoll_ctl(w->ep, EPOLL_CTL_ADD, fd, &cev);
                }
                continue;
            }
            if (events[i].events & EPOLLOUT) conn_flush(c);
            if (events[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
                for (;;) {
                    ssize_t got = read(c->fd, rbuf, sizeof rbuf);
                    if (got < 0 && errno == EAGAIN) break;
                    if (got <= 0) { c->closed = 1; break; }
                    buf_append(&c->in, rbuf, got);
                    if ((size_t)got < sizeof rbuf) break;
                }
            }
            if (!c->closed) conn_parse(c);
            if (c->closed) conn_close(c);
        }
        if (w->deadline_ms >= 0 && now_ms() >= w->deadline_ms) {
            w->deadline_ms = -1;
            curl_multi_socket_action(w->multi, CURL_SOCKET_TIMEOUT, 0, &running);
            finished(w);
        }
        free_dead(w);
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 3) { fprintf(stderr, "usage: curlproxy PORT UPSTREAM-BASE [THREADS]\n"); return 2; }
    port = atoi(argv[1]);
    base = argv[2];
    base_len = strlen(base);
    int threads = argc > 3 ? atoi(argv[3]) : (int)sysconf(_SC_NPROCESSORS_ONLN);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    for (int i = 0; i < CURL_LOCK_DATA_LAST; i++) pthread_mutex_init(&share_locks[i], NULL);
    share = curl_share_init();
    curl_share_setopt(share, CURLSHOPT_LOCKFUNC, share_lock);
    curl_share_setopt(share, CURLSHOPT_UNLOCKFUNC, share_unlock);
    curl_share_setopt(share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
    curl_share_setopt(share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
    spx_llhttp_settings_init(&settings);
    settings.on_url = on_url;
    settings.on_message_begin = on_message_begin;
    settings.on_message_complete = on_message_complete;
    pthread_t t[64];
    for (int i = 0; i < threads && i < 64; i++) pthread_create(&t[i], NULL, run, NULL);
    for (int i = 0; i < threads && i < 64; i++) pthread_join(t[i], NULL);
    return 0;
}
