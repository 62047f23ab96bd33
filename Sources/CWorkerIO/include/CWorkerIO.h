#ifndef SPX_CWORKERIO_H
#define SPX_CWORKERIO_H

/* The system calls of a worker loop, as plain functions of plain types: Swift imports glibc's
 * `struct epoll_event` (packed on x86_64) and its variadic or macro-only parts poorly. */

#include <stdint.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <unistd.h>
#include <errno.h>

typedef struct {
    uint32_t events;
    uint64_t data;
} spx_event;

static const uint32_t SPX_EPOLLIN = EPOLLIN;
static const uint32_t SPX_EPOLLOUT = EPOLLOUT;
static const uint32_t SPX_EPOLLERR = EPOLLERR;
static const uint32_t SPX_EPOLLHUP = EPOLLHUP;
static const uint32_t SPX_EPOLLRDHUP = EPOLLRDHUP;
static const uint32_t SPX_EPOLLET = EPOLLET;
static const uint32_t SPX_EPOLLEXCLUSIVE = EPOLLEXCLUSIVE;

int spx_epoll_create(void);
/* op: EPOLL_CTL_ADD, _MOD, _DEL; returns 0 or -errno. */
int spx_epoll_ctl(int epfd, int op, int fd, uint32_t events, uint64_t data);
/* Up to `max` ready events into `out`; returns their count, or -errno. */
int spx_epoll_wait(int epfd, spx_event *out, int max, int timeout_ms);

int spx_eventfd(void);
void spx_eventfd_signal(int fd);
void spx_eventfd_drain(int fd);

/* A non-blocking, close-on-exec listening socket bound to `address`; returns it or -errno. */
int spx_listen(const struct sockaddr *address, socklen_t length, int backlog);
/* A non-blocking, close-on-exec accepted socket with TCP_NODELAY; returns it or -errno. */
int spx_accept(int fd, struct sockaddr_storage *peer, socklen_t *length);

/* read/write returning -errno on failure. */
ssize_t spx_read(int fd, void *buffer, size_t count);
ssize_t spx_write(int fd, const void *buffer, size_t count);
/* `count` buffers, in order, as one write; returns the bytes written or -errno. */
ssize_t spx_writev(int fd, const struct iovec *vectors, int count);
int spx_close(int fd);
/* shutdown(fd, SHUT_WR): the peer reads EOF after what was written; 0 or -errno. */
int spx_shutdown_write(int fd);

/* The process's one CURLSH (DNS cache and TLS sessions, locked), made on first use; NULL if
 * libcurl could not make it. A `CURLSH *`. */
void *spx_curl_share(void);

/* Gives the memory glibc holds free back to the system (`malloc_trim(0)`; its per-thread arenas
 * keep it otherwise). The tee calls it once a burst has drained. */
void spx_malloc_trim(void);

#endif
