/*
 * libsrtp 2 as a reference for peerlink-rtp's SRTP, in two modes:
 *
 *   srtp_ref peer
 *       A request/response loop on stdin/stdout for the differential test
 *       (crates/rtp/tests/libsrtp.rs). Each message is one byte of operation or
 *       status, a 32-bit big-endian length, and that many bytes:
 *         'I' init:   profile (1, 2, 7 or 8: the DTLS-SRTP ids), 16-bit replay
 *                     window, then master key || master salt. Makes a sending
 *                     and a receiving session with that key.
 *         'P' / 'U':  protect / unprotect one RTP packet.
 *         'Q' / 'V':  protect / unprotect one RTCP packet.
 *       The answer's status is libsrtp's srtp_err_status_t (0 = ok) and its
 *       data the resulting packet.
 *
 *   srtp_ref bench PROFILE SIZE COUNT
 *       Times srtp_protect of COUNT RTP packets of SIZE bytes (header included) and
 *       srtp_unprotect of about as many (passes over 2,048 protected packets, each with
 *       a fresh receiving session), and prints "protect_ns=X unprotect_ns=Y" per packet.
 *
 * Build: cc -O2 -o srtp_ref srtp_ref.c $(pkg-config --cflags --libs libsrtp2)
 */
#include <srtp2/srtp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_PACKET 4096

static int make_policy(srtp_policy_t *p, int profile, unsigned char *key, unsigned long window)
{
    memset(p, 0, sizeof *p);
    switch (profile) {
    case 1:
        srtp_crypto_policy_set_aes_cm_128_hmac_sha1_80(&p->rtp);
        srtp_crypto_policy_set_aes_cm_128_hmac_sha1_80(&p->rtcp);
        break;
    case 2: /* RFC 5764 4.1.2: 32-bit SRTP tag, 80-bit SRTCP tag */
        srtp_crypto_policy_set_aes_cm_128_hmac_sha1_32(&p->rtp);
        srtp_crypto_policy_set_aes_cm_128_hmac_sha1_80(&p->rtcp);
        break;
    case 7:
        srtp_crypto_policy_set_aes_gcm_128_16_auth(&p->rtp);
        srtp_crypto_policy_set_aes_gcm_128_16_auth(&p->rtcp);
        break;
    case 8:
        srtp_crypto_policy_set_aes_gcm_256_16_auth(&p->rtp);
        srtp_crypto_policy_set_aes_gcm_256_16_auth(&p->rtcp);
        break;
    default:
        return -1;
    }
    p->key = key;
    p->window_size = window;
    p->allow_repeat_tx = 1;
    return 0;
}

static int make_sessions(int profile, unsigned char *key, unsigned long window, srtp_t *tx, srtp_t *rx)
{
    srtp_policy_t p;
    if (make_policy(&p, profile, key, window) != 0)
        return -1;
    p.ssrc.type = ssrc_any_outbound;
    if (srtp_create(tx, &p) != srtp_err_status_ok)
        return -1;
    p.ssrc.type = ssrc_any_inbound;
    if (srtp_create(rx, &p) != srtp_err_status_ok)
        return -1;
    return 0;
}

static int read_full(void *buf, size_t n)
{
    return fread(buf, 1, n, stdin) == n ? 0 : -1;
}

static void reply(int status, const unsigned char *data, uint32_t len)
{
    unsigned char head[5] = {(unsigned char)status, len >> 24, len >> 16, len >> 8, len};
    fwrite(head, 1, 5, stdout);
    fwrite(data, 1, len, stdout);
    fflush(stdout);
}

static int peer(void)
{
    static unsigned char buf[MAX_PACKET + SRTP_MAX_TRAILER_LEN];
    static unsigned char key[64];
    srtp_t tx = NULL, rx = NULL;
    for (;;) {
        unsigned char head[5];
        if (read_full(head, 5) != 0)
            return 0;
        uint32_t len = (uint32_t)head[1] << 24 | head[2] << 16 | head[3] << 8 | head[4];
        if (len > MAX_PACKET || read_full(buf, len) != 0)
            return 1;
        int n = (int)len;
        srtp_err_status_t st;
        switch (head[0]) {
        case 'I':
            if (tx) srtp_dealloc(tx);
            if (rx) srtp_dealloc(rx);
            tx = rx = NULL;
            if (len < 3 || len - 3 > sizeof key) { reply(255, NULL, 0); continue; }
            memcpy(key, buf + 3, len - 3);
            reply(make_sessions(buf[0], key, (unsigned long)(buf[1] << 8 | buf[2]), &tx, &rx) ? 255 : 0, NULL, 0);
            continue;
        case 'P': st = srtp_protect(tx, buf, &n); break;
        case 'U': st = srtp_unprotect(rx, buf, &n); break;
        case 'Q': st = srtp_protect_rtcp(tx, buf, &n); break;
        case 'V': st = srtp_unprotect_rtcp(rx, buf, &n); break;
        default: return 1;
        }
        if (st == srtp_err_status_ok)
            reply(0, buf, (uint32_t)n);
        else
            reply(st ? (int)st : 255, NULL, 0);
    }
}

static double now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}

/* Packets kept for the unprotect passes: few enough to stay in cache, so both sides are
 * timed on SRTP and not on memory. Each pass uses a fresh receiving session (an index is
 * accepted once), its set-up amortized over the pass. */
#define WORKING_SET 2048

static int bench(int profile, int size, int count)
{
    unsigned char key[64];
    for (int i = 0; i < 64; i++)
        key[i] = (unsigned char)(i * 7 + 1);
    srtp_t tx, rx;
    srtp_policy_t p;
    if (make_sessions(profile, key, 1024, &tx, &rx) != 0 || make_policy(&p, profile, key, 1024) != 0)
        return 1;
    p.ssrc.type = ssrc_any_inbound;
    int stride = size + SRTP_MAX_TRAILER_LEN;
    unsigned char *store = malloc((size_t)stride * WORKING_SET);
    int lens[WORKING_SET];
    if (!store)
        return 4;
    unsigned char plain[MAX_PACKET + SRTP_MAX_TRAILER_LEN];
    memset(plain, 0xab, sizeof plain);
    plain[0] = 0x80;
    plain[1] = 96;
    plain[8] = 0x12, plain[9] = 0x34, plain[10] = 0x56, plain[11] = 0x78;
    unsigned char work[MAX_PACKET + SRTP_MAX_TRAILER_LEN];
    for (int i = 0; i < WORKING_SET; i++) {
        memcpy(work, plain, size);
        work[2] = (unsigned char)(i >> 8), work[3] = (unsigned char)i;
        int n = size;
        if (srtp_protect(tx, work, &n) != srtp_err_status_ok)
            return 2;
        memcpy(store + (size_t)stride * i, work, n);
        lens[i] = n;
    }
    /* Protect: the plaintext is copied into the packet buffer each time (in place), as ours
     * writes into a caller's buffer. */
    double t0 = now_ns();
    for (int i = 0; i < count; i++) {
        memcpy(work, plain, size);
        int seq = WORKING_SET + i; /* after the stored ones: libsrtp refuses old indices */
        work[2] = (unsigned char)(seq >> 8), work[3] = (unsigned char)seq;
        int n = size;
        if (srtp_protect(tx, work, &n) != srtp_err_status_ok)
            return 2;
    }
    double t1 = now_ns();
    int passes = count / WORKING_SET > 0 ? count / WORKING_SET : 1;
    for (int pass = 0; pass < passes; pass++) {
        srtp_dealloc(rx);
        if (srtp_create(&rx, &p) != srtp_err_status_ok)
            return 1;
        for (int i = 0; i < WORKING_SET; i++) {
            memcpy(work, store + (size_t)stride * i, lens[i]);
            int n = lens[i];
            if (srtp_unprotect(rx, work, &n) != srtp_err_status_ok)
                return 3;
        }
    }
    double t2 = now_ns();
    printf("protect_ns=%.1f unprotect_ns=%.1f\n", (t1 - t0) / count, (t2 - t1) / ((double)passes * WORKING_SET));
    return 0;
}

int main(int argc, char **argv)
{
    if (srtp_init() != srtp_err_status_ok)
        return 1;
    if (argc >= 2 && strcmp(argv[1], "peer") == 0)
        return peer();
    if (argc == 5 && strcmp(argv[1], "bench") == 0)
        return bench(atoi(argv[2]), atoi(argv[3]), atoi(argv[4]));
    fprintf(stderr, "usage: srtp_ref peer | srtp_ref bench PROFILE SIZE COUNT\n");
    return 2;
}
