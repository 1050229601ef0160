/* link: the worker link — LinkFrame messages (proto/job.proto) as 4-byte big-endian length +
 * protobuf, over a Unix socket the daemon listens on and adapt-worker connects to.
 *
 * The one idea: the decoder is a pure byte-stream state machine (feed bytes, take frames) with
 * a hard frame-size limit checked on the length prefix, before any byte of the body is kept, so
 * a broken or hostile worker can cost the daemon at most one frame of memory; the libuv server
 * only moves bytes between sockets and the decoder. */
#ifndef ADAPT_LINK_H
#define ADAPT_LINK_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "error.h"
#include "job.pb-c.h"
#include "job_store.h"

enum {
    LINK_HEADER_BYTES = 4,
    LINK_MAX_FRAME    = 64 * 1024,   /* default body limit; a Progress frame is ~100 bytes */
    LINK_PROTOCOL     = 1,
};

/* Encodes f as one frame into a malloc'd buffer (*buf, *len); the caller frees it. */
int link_frame_encode(const Adaptd__LinkFrame *f, uint8_t **buf, size_t *len, adapt_error *err);

typedef struct link_decoder link_decoder_t;

int  link_decoder_init(link_decoder_t **out, size_t max_frame, adapt_error *err);
void link_decoder_close(link_decoder_t *d);
/* Appends received bytes (copied). Fails (ADAPT_ECORRUPT) as soon as a length prefix exceeds
 * the limit; a failed decoder stays failed. */
int  link_decoder_feed(link_decoder_t *d, const void *data, size_t len, adapt_error *err);
/* Takes the next complete frame: returns 1 and *frame (the caller frees it with
 * adaptd__link_frame__free_unpacked(frame, NULL)), 0 when more bytes are needed, or a negative
 * error for a frame that does not decode or carries no message. */
int  link_decoder_next(link_decoder_t *d, Adaptd__LinkFrame **frame, adapt_error *err);
/* Bytes of an incomplete frame held: non-zero at end of stream means it was truncated. */
size_t link_decoder_pending(const link_decoder_t *d);

typedef struct link_server link_server_t;
typedef struct link_peer   link_peer_t;

typedef struct link_handlers {
    /* One decoded frame from peer. The frame is owned by the link and freed after the call.
     * Returning non-zero closes the peer (a protocol or state violation). */
    int  (*on_frame)(void *ctx, link_peer_t *peer, const Adaptd__LinkFrame *frame);
    /* The peer is gone (closed, truncated, or refused); job_id is the one its Hello named, or
     * "". Called once per peer. */
    void (*on_close)(void *ctx, link_peer_t *peer, const char *job_id);
    void  *ctx;
} link_handlers;

/* Listens on a Unix socket at path (mode 0600; a stale socket file is replaced). The first
 * frame of every peer must be a Hello; every later frame must name the same job. */
int  link_server_init(link_server_t **out, uv_loop_t *loop, const char *path, size_t max_frame,
                      const link_handlers *h, adapt_error *err);
/* Closes the listener and every peer; memory goes once the loop has run the close callbacks. */
void link_server_close(link_server_t *srv);
int  link_server_peers(const link_server_t *srv);

/* Queues a frame to the peer (daemon → worker: Control). */
int  link_peer_send(link_peer_t *peer, const Adaptd__LinkFrame *f, adapt_error *err);
const char *link_peer_job(const link_peer_t *peer);
uint32_t    link_peer_rank(const link_peer_t *peer);

/* Applies one frame to the job store: Hello moves a starting job to running (and is refused for
 * a job that is not starting or running), Progress from rank 0 becomes the job's progress and a
 * metrics row, a complete Checkpoint its last checkpoint, Done is recorded on the job's current
 * attempt (the scheduler decides the job's state once the attempt's processes have exited: a
 * Done ok followed by a crash is not a success). Heartbeats change nothing here. */
int link_store_frame(job_store_t *js, const Adaptd__LinkFrame *f, adapt_error *err);
/* What a Done frame says, as enum job_store_done. */
int link_done_outcome(const Adaptd__Done *d);

#endif
