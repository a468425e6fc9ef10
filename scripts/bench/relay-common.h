/*
 * relay-common.h — what relay.c and relay-uring.c share: the command line
 * (LISTEN_PORT BACKEND_PORT..., all on 127.0.0.1), the listening socket, the blocking
 * backend connect taken round-robin per client connection, and dying with errno's reason.
 * Included by both (header-only: each relay is one compilation unit).
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_BACKENDS 16

static void die(const char *what) {
    perror(what);
    exit(1);
}

/* The backends a relay spreads its client connections over, one each, in turn. */
struct backends {
    unsigned short port[MAX_BACKENDS];
    int count, next;
};

/* LISTEN_PORT BACKEND_PORT... from argv[first..argc); 0, or -1 when they do not fit. */
static int parse_ports(int argc, char **argv, int first, unsigned short *listen_port,
                       struct backends *b) {
    b->count = argc - first - 1;
    b->next = 0;
    if (b->count < 1 || b->count > MAX_BACKENDS)
        return -1;
    *listen_port = (unsigned short)atoi(argv[first]);
    for (int i = 0; i < b->count; i++)
        b->port[i] = (unsigned short)atoi(argv[first + 1 + i]);
    return 0;
}

/* The listening socket on 127.0.0.1:port (SO_REUSEADDR, backlog 4096); `type_flags` are
 * added to SOCK_STREAM | SOCK_CLOEXEC. */
static int listen_loopback(unsigned short port, int type_flags) {
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | type_flags, 0);
    if (lfd < 0)
        die("socket");
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in la = {.sin_family = AF_INET, .sin_port = htons(port)};
    la.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(lfd, (struct sockaddr *)&la, sizeof la) < 0)
        die("bind");
    if (listen(lfd, 4096) < 0)
        die("listen");
    return lfd;
}

/* A blocking connect to the next backend (connections are opened during the warm-up, on
 * loopback); -1 if it fails. */
static int connect_next_backend(struct backends *b) {
    unsigned short port = b->port[b->next];
    b->next = (b->next + 1) % b->count;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* The backend connection for the newly accepted client `cfd`, both with the relay's socket
 * options; -1 (and `cfd` closed) if the backend cannot be reached. */
static int pair_with_backend(int cfd, struct backends *b, void (*set_options)(int fd)) {
    int bfd = connect_next_backend(b);
    if (bfd < 0) {
        close(cfd);
        return -1;
    }
    set_options(bfd);
    set_options(cfd);
    return bfd;
}
