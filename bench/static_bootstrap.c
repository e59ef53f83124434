/*
 * A minimal Lambda custom runtime (`provided`): the "static function" of the
 * creation, density and burst benchmarks (bench/creation.py, density.py,
 * burst.py compile it with `gcc -static -O2`).
 *
 * Loop: GET /2018-06-01/runtime/invocation/next, then POST the event back
 * unchanged as the response (an empty event answers `{}`); an event with
 * `"sleep_ms": N` first sleeps N ms (a busy sandbox, for density.py). One connection
 * per request (`Connection: close`), no allocation, no libc name lookup, so
 * the process is a few pages: what a sandbox costs shows, not the runtime.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static struct sockaddr_in api;
static char buf[1 << 20];

static int open_api(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&api, sizeof api) < 0) {
        perror("runtime api");
        exit(1);
    }
    return fd;
}

static void send_all(int fd, const char *p, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w <= 0) {
            perror("write");
            exit(1);
        }
        p += w;
        n -= (size_t)w;
    }
}

/* Reads a whole response (the server closes); returns its length. */
static size_t read_all(int fd) {
    size_t n = 0;
    for (;;) {
        ssize_t r = read(fd, buf + n, sizeof buf - 1 - n);
        if (r < 0) {
            perror("read");
            exit(1);
        }
        if (r == 0 || n + (size_t)r >= sizeof buf - 1) {
            n += (size_t)(r > 0 ? r : 0);
            break;
        }
        n += (size_t)r;
    }
    buf[n] = 0;
    close(fd);
    return n;
}

int main(void) {
    const char *addr = getenv("AWS_LAMBDA_RUNTIME_API");
    char host[64];
    const char *colon = addr ? strchr(addr, ':') : NULL;
    if (!colon || (size_t)(colon - addr) >= sizeof host) {
        fprintf(stderr, "AWS_LAMBDA_RUNTIME_API must be host:port\n");
        return 1;
    }
    memcpy(host, addr, (size_t)(colon - addr));
    host[colon - addr] = 0;
    api.sin_family = AF_INET;
    api.sin_port = htons((unsigned short)atoi(colon + 1));
    if (inet_pton(AF_INET, host, &api.sin_addr) != 1) {
        fprintf(stderr, "bad runtime api host %s\n", host);
        return 1;
    }
    static const char next[] =
        "GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nHost: r\r\nConnection: close\r\n\r\n";
    for (;;) {
        int fd = open_api();
        send_all(fd, next, sizeof next - 1);
        size_t n = read_all(fd);
        char *body = strstr(buf, "\r\n\r\n");
        char *id = body ? strcasestr(buf, "\r\nLambda-Runtime-Aws-Request-Id:") : NULL;
        if (id && id < body) {
            id += 32;
            while (*id == ' ') id++;
        } else {
            id = NULL;
        }
        if (!body || !id) {
            fprintf(stderr, "no invocation in the /next response\n");
            return 1;
        }
        size_t idlen = strcspn(id, "\r\n");
        char rid[128];
        if (idlen >= sizeof rid) return 1;
        memcpy(rid, id, idlen);
        rid[idlen] = 0;
        body += 4;
        size_t blen = n - (size_t)(body - buf);
        const char *payload = blen ? body : "{}";
        size_t plen = blen ? blen : 2;
        const char *sleep_ms = strstr(body, "\"sleep_ms\":");
        if (sleep_ms) usleep((useconds_t)atoi(sleep_ms + 11) * 1000);
        char head[512];
        int hl = snprintf(head, sizeof head,
                          "POST /2018-06-01/runtime/invocation/%s/response HTTP/1.1\r\n"
                          "Host: r\r\nConnection: close\r\nContent-Length: %zu\r\n\r\n",
                          rid, plen);
        fd = open_api();
        send_all(fd, head, (size_t)hl);
        send_all(fd, payload, plen);
        read_all(fd);
    }
}
