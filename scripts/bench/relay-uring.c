/*
 * relay-uring.c — scripts/bench/relay.c driven by one io_uring instead of epoll: the same
 * byte-relay floor, to measure what io_uring's features save (or cost) in the kernel next
 * to the epoll relay, with no HTTP work and no runtime in the way.
 *
 * One thread, one io_uring (liburing), set up with IORING_SETUP_SINGLE_ISSUER |
 * IORING_SETUP_DEFER_TASKRUN (without them, saying so on stderr, if the kernel refuses
 * them). Like relay.c: for every accepted client connection it opens one backend connection
 * (blocking connect, backends taken round-robin per connection) and copies bytes both ways:
 * no parsing, no timers. The listener has one multishot accept. Every loop turn is one
 * io_uring_submit_and_wait(ring, 1) — a single kernel entry that submits the queued SQEs
 * and waits for completions (running the deferred task work) — and then reaps every CQE
 * there is, as relay.c makes one epoll_wait per turn.
 *
 * Modes (--mode M; default plain):
 *   plain      one recv in flight per direction into that direction's 16 KiB buffer; once
 *              it completes, a send of what was read (again for the rest after a short
 *              send), then the next recv. A request on a warm connection costs 4 SQEs:
 *              recv(client) → send(backend) → recv(client) again, recv(backend) →
 *              send(client) → recv(backend) again; a recv that finds no data arms a poll.
 *   pollfirst  plain with IORING_RECVSEND_POLL_FIRST on every recv: it arms its poll at
 *              once instead of first trying to read (a recv issued right after the send it
 *              follows almost never finds data).
 *   multishot  the sockets are registered files (a sparse table; each socket registered
 *              after accept/connect, its descriptor kept for shutdown(2) and close(2)
 *              only), each with one multishot recv (armed once, re-armed only when a CQE
 *              comes without IORING_CQE_F_MORE) that takes its buffers from one
 *              provided-buffer ring of 256 × 16 KiB shared by all connections. Received
 *              buffers queue per direction and are sent from in order; a buffer goes back
 *              to the ring once sent. A request on a warm connection costs 2 SQEs (the
 *              sends). When the ring is empty a multishot recv ends with ENOBUFS; it is
 *              re-armed in the loop turn in which buffers come back.
 *
 * Simplifications a floor may make, as relay.c: the backend connect is blocking
 * (connections are opened during the warm-up, on loopback); when one side sends EOF, its
 * peer is shut down for writing once the bytes before the EOF are sent, and the pair is
 * closed once both directions are done, or on any error. The shutdown is shutdown(2):
 * IORING_OP_SHUTDOWN always runs in an io-wq worker thread (started on demand), and a
 * relay of one thread should stay one. Closing a pair cancels its requests (naming its
 * sockets, which must still be its own then); once the last of them has completed, its
 * sockets are closed and its memory freed. In multishot mode, a connection whose peer
 * stops reading can hold every provided buffer (the others then wait in ENOBUFS): there is
 * no per-connection cap.
 *
 * Build: cc -O2 -Wall -o relay-uring relay-uring.c -luring   (liburing 2.3+, Linux 6.1+)
 * Usage: relay-uring [--mode plain|pollfirst|multishot] LISTEN_PORT BACKEND_PORT...
 * (all on 127.0.0.1). Prints "relay listening on 127.0.0.1:PORT" when ready.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "relay-common.h"

#define BUF_BYTES 16384
#define RING_ENTRIES 4096 /* SQ entries (the CQ has twice as many) */
#define BUF_COUNT 256     /* provided buffers of the multishot mode (a power of two) */
#define BUF_GROUP 0
#define MAX_FIXED_FILES 65536
#define NO_BUF (-1)

enum mode { PLAIN, POLLFIRST, MULTISHOT };

/* What a CQE completes. Its user_data is the half the request acts for (8-byte aligned)
 * ORed with one of these; the listener's accept has no half. */
enum op { OP_ACCEPT, OP_RECV, OP_SEND, OP_CANCEL };
#define OP_MASK 7u

/* One direction of a relayed pair: bytes received from `from` being sent to `to`. */
struct pair;
struct half {
    struct pair *pair;
    int from, to;   /* descriptors; in multishot mode fixed-file indexes */
    int to_fd;      /* the descriptor of `to` (for shutdown(2) and close(2)) */
    char *data;     /* bytes being sent are data[off..len); plain modes: this direction's
                     * buffer, which its recv fills; multishot: the oldest queued buffer */
    unsigned len, off;
    int sending;    /* a send is in flight */
    int eof;        /* `from` sent EOF */
    int head, tail; /* multishot: buffers received, not yet sent (the oldest being sent) */
    int starved;    /* multishot: its recv ended with ENOBUFS; on the starved list */
    struct half *next_starved;
};
_Static_assert(_Alignof(struct half) > OP_MASK, "user_data packs an op in low bits");

/* A client connection and its backend connection. */
struct pair {
    struct half up, down; /* up: client → backend, down: backend → client */
    int inflight;         /* requests whose last CQE has not come yet */
    int closing;          /* its requests are being cancelled */
    int slot;             /* multishot: fixed files 2 × slot (client) and 2 × slot + 1 */
    char bufs[];          /* plain modes: the two directions' buffers */
};

static struct io_uring ring;
static enum mode mode;

/* Multishot mode: the provided-buffer ring, the buffers, and per buffer its byte count and
 * the next buffer of the same direction's queue. */
static struct io_uring_buf_ring *buf_ring;
static char *buffers;
static unsigned buf_len[BUF_COUNT];
static int buf_next[BUF_COUNT];
static int buffers_returned; /* some went back to the ring during this loop turn */
static struct half *starved; /* halves waiting for buffers to re-arm their recv */
static int *free_slots, free_slot_count; /* pair slots of the fixed-file table */

static void die_with(const char *what, int negative_errno) {
    errno = -negative_errno;
    die(what);
}

/* An SQE, submitting what is queued first if the SQ is full. */
static struct io_uring_sqe *get_sqe(void) {
    struct io_uring_sqe *sqe;
    while ((sqe = io_uring_get_sqe(&ring)) == NULL)
        io_uring_submit(&ring);
    return sqe;
}

/* Tag a prepared SQE as `op` of `h` and count it in flight for its pair. */
static void track(struct io_uring_sqe *sqe, struct half *h, enum op op) {
    io_uring_sqe_set_data64(sqe, (uint64_t)(uintptr_t)h | op);
    h->pair->inflight++;
}

/* IOSQE_FIXED_FILE on SQEs naming a socket, in multishot mode. */
static void fixed_file(struct io_uring_sqe *sqe) {
    if (mode == MULTISHOT)
        sqe->flags |= IOSQE_FIXED_FILE;
}

static void submit_accept(int lfd) {
    struct io_uring_sqe *sqe = get_sqe();
    io_uring_prep_multishot_accept(sqe, lfd, NULL, NULL, SOCK_CLOEXEC);
    io_uring_sqe_set_data64(sqe, OP_ACCEPT);
}

static void submit_recv(struct half *h) {
    struct io_uring_sqe *sqe = get_sqe();
    if (mode == MULTISHOT) {
        io_uring_prep_recv_multishot(sqe, h->from, NULL, 0, 0);
        sqe->flags |= IOSQE_BUFFER_SELECT;
        sqe->buf_group = BUF_GROUP;
    } else {
        io_uring_prep_recv(sqe, h->from, h->data, BUF_BYTES, 0);
        if (mode == POLLFIRST)
            sqe->ioprio |= IORING_RECVSEND_POLL_FIRST;
    }
    fixed_file(sqe);
    track(sqe, h, OP_RECV);
}

static void submit_send(struct half *h) {
    struct io_uring_sqe *sqe = get_sqe();
    io_uring_prep_send(sqe, h->to, h->data + h->off, h->len - h->off, 0);
    fixed_file(sqe);
    track(sqe, h, OP_SEND);
    h->sending = 1;
}

/* Multishot mode: the provided buffers. */
static char *buf_addr(int bid) { return buffers + (size_t)bid * BUF_BYTES; }

static void give_back(int bid) {
    io_uring_buf_ring_add(buf_ring, buf_addr(bid), BUF_BYTES, (unsigned short)bid,
                          io_uring_buf_ring_mask(BUF_COUNT), 0);
    io_uring_buf_ring_advance(buf_ring, 1);
    buffers_returned = 1;
}

/* Send the oldest queued buffer of h. */
static void send_head(struct half *h) {
    h->data = buf_addr(h->head);
    h->len = buf_len[h->head];
    h->off = 0;
    submit_send(h);
}

static void enqueue(struct half *h, int bid, unsigned len) {
    buf_len[bid] = len;
    buf_next[bid] = NO_BUF;
    if (h->tail == NO_BUF)
        h->head = bid;
    else
        buf_next[h->tail] = bid;
    h->tail = bid;
    if (!h->sending)
        send_head(h);
}

/* The oldest queued buffer has been sent (or will never be): back to the ring. */
static void pop_head(struct half *h) {
    int bid = h->head;
    h->head = buf_next[bid];
    if (h->head == NO_BUF)
        h->tail = NO_BUF;
    give_back(bid);
}

/* Multishot mode: the buffers a closing pair holds, but the one a send still uses. */
static void give_back_queued(struct half *h) {
    int bid = h->head;
    if (bid == NO_BUF)
        return;
    if (h->sending) {
        bid = buf_next[bid];
        buf_next[h->head] = NO_BUF;
        h->tail = h->head;
    } else {
        h->head = h->tail = NO_BUF;
    }
    while (bid != NO_BUF) {
        int next = buf_next[bid];
        give_back(bid);
        bid = next;
    }
}

static void unstarve(struct half *h) {
    struct half **link = &starved;
    while (*link != h)
        link = &(*link)->next_starved;
    *link = h->next_starved;
    h->starved = 0;
}

/* Re-arm the recvs that ended with ENOBUFS, once buffers have come back. */
static void rearm_starved(void) {
    struct half *h = starved;
    starved = NULL;
    while (h != NULL) {
        struct half *next = h->next_starved;
        h->starved = 0;
        submit_recv(h);
        h = next;
    }
}

/* Cancel every request of the pair (the sockets are closed once all have completed). */
static void close_pair(struct pair *p) {
    struct half *ends[2] = {&p->up, &p->down}; /* up reads the client, down the backend */
    p->closing = 1;
    for (int i = 0; i < 2; i++) {
        struct half *h = ends[i];
        if (mode == MULTISHOT) {
            give_back_queued(h);
            if (h->starved)
                unstarve(h);
        }
        struct io_uring_sqe *sqe = get_sqe();
        io_uring_prep_cancel_fd(sqe, h->from, IORING_ASYNC_CANCEL_ALL |
                                (mode == MULTISHOT ? IORING_ASYNC_CANCEL_FD_FIXED : 0));
        track(sqe, h, OP_CANCEL);
    }
}

/* A closing pair's last request has completed: close its sockets and free it. */
static void free_pair(struct pair *p) {
    if (mode == MULTISHOT) {
        int none[2] = {-1, -1};
        io_uring_register_files_update(&ring, 2 * (unsigned)p->slot, none, 2);
        free_slots[free_slot_count++] = p->slot;
    }
    close(p->up.to_fd);
    close(p->down.to_fd);
    free(p);
}

/* A direction is done: EOF read and everything before it sent. */
static int done(const struct half *h) { return h->eof && !h->sending; }

/* h read EOF and has sent everything: shut its peer down for writing; close the pair if
 * the other direction is done too. */
static void finish(struct half *h) {
    struct pair *p = h->pair;
    shutdown(h->to_fd, SHUT_WR);
    if (done(&p->up) && done(&p->down))
        close_pair(p);
}

static void on_recv(struct half *h, const struct io_uring_cqe *cqe) {
    struct pair *p = h->pair;
    int bid = NO_BUF;
    if (cqe->flags & IORING_CQE_F_BUFFER)
        bid = (int)(cqe->flags >> IORING_CQE_BUFFER_SHIFT);
    if (p->closing) {
        if (bid != NO_BUF)
            give_back(bid);
        return;
    }
    if (cqe->res > 0) {
        if (mode != MULTISHOT) {
            h->len = (unsigned)cqe->res;
            h->off = 0;
            submit_send(h);
            return;
        }
        enqueue(h, bid, (unsigned)cqe->res);
        if (!(cqe->flags & IORING_CQE_F_MORE))
            submit_recv(h); /* the multishot recv ended: arm a new one */
        return;
    }
    if (bid != NO_BUF)
        give_back(bid); /* a buffer picked for no data */
    if (cqe->res == 0) {
        h->eof = 1;
        if (!h->sending) /* else once the queued bytes are sent */
            finish(h);
    } else if (cqe->res == -ENOBUFS) {
        h->starved = 1;
        h->next_starved = starved;
        starved = h;
    } else {
        close_pair(p);
    }
}

static void on_send(struct half *h, int res) {
    struct pair *p = h->pair;
    h->sending = 0;
    if (res > 0 && !p->closing) {
        h->off += (unsigned)res;
        if (h->off < h->len) {
            submit_send(h); /* short send: the rest */
            return;
        }
    }
    if (mode == MULTISHOT)
        pop_head(h); /* sent, failed or abandoned: the buffer goes back */
    if (p->closing)
        return;
    if (res <= 0) {
        close_pair(p);
    } else if (mode != MULTISHOT) {
        submit_recv(h);
    } else if (h->head != NO_BUF) {
        send_head(h);
    } else if (h->eof) {
        finish(h);
    }
}

static void set_socket_options(int fd) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

/* Relay between two connected sockets (blocking descriptors, as the listener's: io_uring
 * tries without waiting and then polls, so relay.c's O_NONBLOCK is not needed): a new pair
 * with its recvs armed. Multishot mode: the sockets also go into a free slot of the
 * fixed-file table (closed instead if there is none). */
static void open_pair(int cfd, int bfd) {
    int client = cfd, backend = bfd, slot = 0;
    if (mode == MULTISHOT) {
        int fds[2] = {cfd, bfd};
        slot = free_slot_count > 0 ? free_slots[free_slot_count - 1] : -1;
        if (slot < 0 ||
            io_uring_register_files_update(&ring, 2 * (unsigned)slot, fds, 2) != 2) {
            close(cfd);
            close(bfd);
            return;
        }
        free_slot_count--;
        client = 2 * slot;
        backend = client + 1;
    }
    struct pair *p = calloc(1, sizeof *p + (mode == MULTISHOT ? 0 : 2 * BUF_BYTES));
    if (p == NULL)
        die("calloc");
    p->slot = slot;
    p->up = (struct half){.pair = p, .from = client, .to = backend, .to_fd = bfd,
                          .head = NO_BUF, .tail = NO_BUF};
    p->down = (struct half){.pair = p, .from = backend, .to = client, .to_fd = cfd,
                            .head = NO_BUF, .tail = NO_BUF};
    if (mode != MULTISHOT) {
        p->up.data = p->bufs;
        p->down.data = p->bufs + BUF_BYTES;
    }
    submit_recv(&p->up);
    submit_recv(&p->down);
}

static void complete(const struct io_uring_cqe *cqe) {
    struct half *h = (struct half *)(uintptr_t)(cqe->user_data & ~(uint64_t)OP_MASK);
    enum op op = (enum op)(cqe->user_data & OP_MASK);
    struct pair *p = h->pair;
    if (!(cqe->flags & IORING_CQE_F_MORE))
        p->inflight--;
    if (op == OP_RECV)
        on_recv(h, cqe);
    else if (op == OP_SEND)
        on_send(h, cqe->res);
    /* OP_CANCEL: nothing to do, whatever it found. */
    if (p->closing && p->inflight == 0)
        free_pair(p);
}

/* Multishot mode: the sparse fixed-file table (as large as RLIMIT_NOFILE allows) and the
 * provided-buffer ring, filled. */
static void setup_multishot(void) {
    struct rlimit nofile;
    if (getrlimit(RLIMIT_NOFILE, &nofile) < 0)
        die("getrlimit");
    unsigned files = MAX_FIXED_FILES;
    if (nofile.rlim_cur < files)
        files = (unsigned)nofile.rlim_cur;
    int r = io_uring_register_files_sparse(&ring, files);
    if (r < 0)
        die_with("io_uring_register_files_sparse", r);
    free_slots = malloc(files / 2 * sizeof *free_slots);
    if (free_slots == NULL)
        die("malloc");
    for (int slot = (int)(files / 2) - 1; slot >= 0; slot--)
        free_slots[free_slot_count++] = slot;

    buf_ring = mmap(NULL, BUF_COUNT * sizeof(struct io_uring_buf), PROT_READ | PROT_WRITE,
                    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (buf_ring == MAP_FAILED)
        die("mmap");
    struct io_uring_buf_reg reg = {
        .ring_addr = (uintptr_t)buf_ring, .ring_entries = BUF_COUNT, .bgid = BUF_GROUP};
    r = io_uring_register_buf_ring(&ring, &reg, 0);
    if (r < 0)
        die_with("io_uring_register_buf_ring", r);
    io_uring_buf_ring_init(buf_ring);
    buffers = aligned_alloc(4096, (size_t)BUF_COUNT * BUF_BYTES);
    if (buffers == NULL)
        die("aligned_alloc");
    for (int bid = 0; bid < BUF_COUNT; bid++)
        io_uring_buf_ring_add(buf_ring, buf_addr(bid), BUF_BYTES, (unsigned short)bid,
                              io_uring_buf_ring_mask(BUF_COUNT), bid);
    io_uring_buf_ring_advance(buf_ring, BUF_COUNT);
}

int main(int argc, char **argv) {
    static const char *const mode_names[] = {"plain", "pollfirst", "multishot"};
    int arg = 1, known = 1;
    if (argc > 2 && strcmp(argv[1], "--mode") == 0) {
        known = 0;
        for (int m = PLAIN; m <= MULTISHOT; m++)
            if (strcmp(argv[2], mode_names[m]) == 0) {
                mode = (enum mode)m;
                known = 1;
            }
        arg = 3;
    }
    unsigned short listen_port;
    struct backends backends;
    if (!known || parse_ports(argc, argv, arg, &listen_port, &backends) < 0) {
        fprintf(stderr, "usage: %s [--mode plain|pollfirst|multishot] LISTEN_PORT"
                        " BACKEND_PORT... (127.0.0.1)\n", argv[0]);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);

    int lfd = listen_loopback(listen_port, 0);

    struct io_uring_params params = {
        .flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN};
    int r = io_uring_queue_init_params(RING_ENTRIES, &ring, &params);
    if (r == -EINVAL) {
        fprintf(stderr, "relay-uring: the kernel refused IORING_SETUP_SINGLE_ISSUER|"
                        "IORING_SETUP_DEFER_TASKRUN (%s); running without them\n",
                strerror(-r));
        memset(&params, 0, sizeof params);
        r = io_uring_queue_init_params(RING_ENTRIES, &ring, &params);
    }
    if (r < 0)
        die_with("io_uring_queue_init_params", r);
    if (mode == MULTISHOT)
        setup_multishot();
    fprintf(stderr, "relay-uring: mode %s, ring flags %#x\n", mode_names[mode],
            params.flags);
    submit_accept(lfd);
    printf("relay listening on 127.0.0.1:%u\n", listen_port);
    fflush(stdout);

    for (;;) {
        r = io_uring_submit_and_wait(&ring, 1);
        if (r < 0 && r != -EINTR && r != -EAGAIN)
            die_with("io_uring_submit_and_wait", r);
        unsigned head, seen = 0;
        struct io_uring_cqe *cqe;
        io_uring_for_each_cqe(&ring, head, cqe) {
            seen++;
            if ((cqe->user_data & OP_MASK) != OP_ACCEPT) {
                complete(cqe);
                continue;
            }
            if (!(cqe->flags & IORING_CQE_F_MORE))
                submit_accept(lfd); /* the multishot accept ended: arm a new one */
            if (cqe->res < 0)
                continue;
            int cfd = cqe->res;
            int bfd = pair_with_backend(cfd, &backends, set_socket_options);
            if (bfd >= 0)
                open_pair(cfd, bfd);
        }
        io_uring_cq_advance(&ring, seen);
        if (buffers_returned && starved != NULL)
            rearm_starved();
        buffers_returned = 0;
    }
}
