#define _GNU_SOURCE
#include "CWorkerIO.h"
#include <fcntl.h>
#include <malloc.h>
#include <string.h>

int spx_epoll_create(void) {
    int fd = epoll_create1(EPOLL_CLOEXEC);
    return fd < 0 ? -errno : fd;
}

int spx_epoll_ctl(int epfd, int op, int fd, uint32_t events, uint64_t data) {
    struct epoll_event event;
    memset(&event, 0, sizeof(event));
    event.events = events;
    event.data.u64 = data;
    return epoll_ctl(epfd, op, fd, &event) < 0 ? -errno : 0;
}

int spx_epoll_wait(int epfd, spx_event *out, int max, int timeout_ms) {
    struct epoll_event events[256];
    if (max > 256) max = 256;
    int count;
    do {
        count = epoll_wait(epfd, events, max, timeout_ms);
    } while (count < 0 && errno == EINTR);
    if (count < 0) return -errno;
    for (int i = 0; i < count; i++) {
        out[i].events = events[i].events;
        out[i].data = events[i].data.u64;
    }
    return count;
}

int spx_eventfd(void) {
    int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    return fd < 0 ? -errno : fd;
}

void spx_eventfd_signal(int fd) {
    uint64_t one = 1;
    ssize_t ignored = write(fd, &one, sizeof(one));
    (void)ignored;
}

void spx_eventfd_drain(int fd) {
    uint64_t value;
    ssize_t ignored = read(fd, &value, sizeof(value));
    (void)ignored;
}

int spx_listen(const struct sockaddr *address, socklen_t length, int backlog) {
    int fd = socket(address->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, address, length) < 0 || listen(fd, backlog) < 0) {
        int error = errno;
        close(fd);
        return -error;
    }
    return fd;
}

int spx_accept(int fd, struct sockaddr_storage *peer, socklen_t *length) {
    *length = sizeof(*peer);
    int client = accept4(fd, (struct sockaddr *)peer, length, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (client < 0) return -errno;
    int one = 1;
    setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return client;
}

ssize_t spx_read(int fd, void *buffer, size_t count) {
    ssize_t n;
    do {
        n = read(fd, buffer, count);
    } while (n < 0 && errno == EINTR);
    return n < 0 ? -errno : n;
}

ssize_t spx_write(int fd, const void *buffer, size_t count) {
    ssize_t n;
    do {
        n = send(fd, buffer, count, MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    return n < 0 ? -errno : n;
}

ssize_t spx_writev(int fd, const struct iovec *vectors, int count) {
    /* sendmsg rather than writev: MSG_NOSIGNAL, as spx_write's send. */
    struct msghdr message = {0};
    message.msg_iov = (struct iovec *)vectors;
    message.msg_iovlen = (size_t)count;
    ssize_t n;
    do {
        n = sendmsg(fd, &message, MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    return n < 0 ? -errno : n;
}

int spx_close(int fd) {
    return close(fd) < 0 ? -errno : 0;
}

int spx_shutdown_write(int fd) {
    return shutdown(fd, SHUT_WR) < 0 ? -errno : 0;
}

void spx_malloc_trim(void) {
    malloc_trim(0);
}
