/*
 * relay.c — the byte-relay floor of scripts/bench.sh: what any proxy on kernel sockets
 * pays before doing any HTTP work.
 *
 * One thread, one epoll instance (level-triggered). For every accepted client connection
 * it opens one backend connection (backends taken round-robin per connection, like the
 * proxies spread their requests) and copies bytes both ways with read(2)/write(2): no
 * parsing, no buffering beyond one 16 KiB buffer per direction, no timers. A request on
 * a warm connection costs it exactly: epoll_wait → read(client) → write(backend) →
 * epoll_wait → read(backend) → write(client), with epoll_wait batching under load.
 *
 * Simplifications a floor may make: the backend connect is blocking (connections are
 * opened during the warm-up, on loopback); when one side closes, its peer is shut down
 * for writing once its bytes are written, and the pair is closed once both directions
 * are done, or on any error.
 *
 * Build: cc -O2 -o relay relay.c        Usage: relay LISTEN_PORT BACKEND_PORT...
 * (all on 127.0.0.1). Prints "relay listening on 127.0.0.1:PORT" when ready.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "relay-common.h"

#define BUF_BYTES 16384
#define MAX_EVENTS 256

/* One direction of a relayed pair: bytes read from `from` waiting to be written to `to`. */
struct half {
    int from, to;
    size_t len, off; /* pending bytes are buf[off..len) */
    int read_closed; /* `from` sent EOF (and `to` was shut down for writing) */
    char buf[BUF_BYTES];
};

/* A client connection and its backend connection. epoll data points at a `struct end`. */
struct pair;
struct end {
    struct pair *pair;
    int fd;
    struct half *in;  /* the half that reads from this fd */
    struct half *out; /* the half that writes to this fd */
};
struct pair {
    struct half up, down; /* up: client → backend, down: backend → client */
    struct end client, backend;
};

static int epfd;

/* Events an end waits for: readable while its inbound half has nothing pending and is
 * open; writable while its outbound half has bytes pending. */
static void rearm(struct end *e, int op) {
    struct epoll_event ev = {0};
    if (e->in->len == e->in->off && !e->in->read_closed)
        ev.events |= EPOLLIN;
    if (e->out->len > e->out->off)
        ev.events |= EPOLLOUT;
    ev.data.ptr = e;
    if (epoll_ctl(epfd, op, e->fd, &ev) < 0)
        die("epoll_ctl");
}

static uint32_t wanted(const struct end *e) {
    uint32_t w = 0;
    if (e->in->len == e->in->off && !e->in->read_closed)
        w |= EPOLLIN;
    if (e->out->len > e->out->off)
        w |= EPOLLOUT;
    return w;
}

/* Pairs closed while handling one batch of events; freed after the batch, because a
 * later event of the same batch may still point at them. */
static struct pair *closed[2 * MAX_EVENTS];
static int closed_count;

static void close_pair(struct pair *p) {
    close(p->client.fd); /* close also removes the fd from the epoll set */
    close(p->backend.fd);
    p->client.fd = p->backend.fd = -1;
    closed[closed_count++] = p;
}

/* Write what is pending in h; returns -1 on a write error. */
static int flush(struct half *h) {
    while (h->off < h->len) {
        ssize_t n = write(h->to, h->buf + h->off, h->len - h->off);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return 0;
            if (errno == EINTR)
                continue;
            return -1;
        }
        h->off += (size_t)n;
    }
    h->off = h->len = 0;
    return 0;
}

static void set_socket_options(int fd) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

int main(int argc, char **argv) {
    unsigned short listen_port;
    struct backends backends;
    if (parse_ports(argc, argv, 1, &listen_port, &backends) < 0) {
        fprintf(stderr, "usage: %s LISTEN_PORT BACKEND_PORT... (127.0.0.1)\n", argv[0]);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);

    int lfd = listen_loopback(listen_port, SOCK_NONBLOCK);
    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0)
        die("epoll_create1");
    struct epoll_event lev = {.events = EPOLLIN, .data.ptr = NULL};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, lfd, &lev) < 0)
        die("epoll_ctl listen");
    printf("relay listening on 127.0.0.1:%u\n", listen_port);
    fflush(stdout);

    struct epoll_event events[MAX_EVENTS];
    for (;;) {
        int n = epoll_wait(epfd, events, MAX_EVENTS, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("epoll_wait");
        }
        for (int i = 0; i < n; i++) {
            struct end *e = events[i].data.ptr;
            if (e == NULL) { /* the listener */
                int cfd;
                while ((cfd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
                    int bfd = pair_with_backend(cfd, &backends, set_socket_options);
                    if (bfd < 0)
                        continue;
                    struct pair *p = calloc(1, sizeof *p);
                    if (p == NULL)
                        die("calloc");
                    p->up.from = p->down.to = cfd;
                    p->up.to = p->down.from = bfd;
                    p->client = (struct end){p, cfd, &p->up, &p->down};
                    p->backend = (struct end){p, bfd, &p->down, &p->up};
                    rearm(&p->client, EPOLL_CTL_ADD);
                    rearm(&p->backend, EPOLL_CTL_ADD);
                }
                continue;
            }
            struct pair *p = e->pair;
            if (p->client.fd < 0)
                continue; /* closed earlier in this batch */
            struct end *peer = (e == &p->client) ? &p->backend : &p->client;
            uint32_t before_e = wanted(e), before_peer = wanted(peer);
            int failed = (events[i].events & EPOLLERR) != 0;
            if (!failed && (events[i].events & (EPOLLOUT | EPOLLHUP)))
                failed |= flush(e->out); /* pending bytes towards this end */
            if (!failed && (events[i].events & (EPOLLIN | EPOLLHUP)) &&
                e->in->len == 0 && !e->in->read_closed) {
                ssize_t r = read(e->fd, e->in->buf, BUF_BYTES);
                if (r > 0) {
                    e->in->len = (size_t)r;
                    failed |= flush(e->in); /* straight on to the peer */
                } else if (r == 0) {
                    e->in->read_closed = 1;
                    shutdown(peer->fd, SHUT_WR);
                } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
                    failed = 1;
                }
            }
            /* Hang-up after its EOF was read: nothing more can be written to this end. */
            if ((events[i].events & EPOLLHUP) && e->in->read_closed)
                failed = 1;
            int drained = p->up.len == p->up.off && p->down.len == p->down.off;
            if (failed || (p->up.read_closed && p->down.read_closed && drained)) {
                close_pair(p);
                continue;
            }
            /* epoll_ctl only when the wanted events change (never on the warm path). */
            if (wanted(e) != before_e)
                rearm(e, EPOLL_CTL_MOD);
            if (wanted(peer) != before_peer)
                rearm(peer, EPOLL_CTL_MOD);
        }
        while (closed_count > 0)
            free(closed[--closed_count]);
    }
}
