/* The allocator every nghttp2 session of ours uses (agent tunnels, relay links, HTTP/2 from
 * clients).
 *
 * Everything goes to malloc except the frame buffer that nghttp2 keeps for a session's whole
 * life (NGHTTP2_FRAMEBUF_CHUNKLEN: 16394 bytes in nghttp2 1.52). Those come from page-aligned
 * slots of one reserved address range, so the pages of it that a session never wrote are never
 * resident: an idle tunnel writes SETTINGS, PING and WINDOW_UPDATE frames into its first page
 * only (DATA frames bypass it, tunnel.c), where a malloc'd buffer would sit on heap pages that
 * earlier allocations (TLS handshakes) had already made resident, about 12 KiB per session. A
 * freed slot's pages go back to the kernel (MADV_DONTNEED). */
#ifndef TUNNEL_H2MEM_H
#define TUNNEL_H2MEM_H

#include <nghttp2/nghttp2.h>
#include <stddef.h>

/* The allocator to pass to nghttp2_session_*_new3. */
nghttp2_mem *h2mem(void);

/* Frame buffers currently served from slots (for tests and the benchmark's profile). */
size_t h2mem_slots_in_use(void);

#endif
