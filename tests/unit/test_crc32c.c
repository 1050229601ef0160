/* crc32c against the published check value and the RFC 3720 test vectors, and the hardware path
 * against itself split at every offset (incremental updates must equal one pass). */
#include "../check.h"
#include "crc32c.h"

#include <stdint.h>

int main(void)
{
    CHECK(crc32c("123456789", 9) == 0xE3069283u);          /* the standard check value */
    uint8_t zeros[32] = {0}, ones[32], inc[32], dec[32];
    for (int i = 0; i < 32; i++) { ones[i] = 0xFF; inc[i] = (uint8_t)i; dec[i] = (uint8_t)(31 - i); }
    CHECK(crc32c(zeros, 32) == 0x8A9136AAu);                /* RFC 3720 B.4 */
    CHECK(crc32c(ones, 32) == 0x62A8AB43u);
    CHECK(crc32c(inc, 32) == 0x46DD794Eu);
    CHECK(crc32c(dec, 32) == 0x113FDB5Cu);
    CHECK(crc32c("", 0) == 0);

    uint8_t buf[1000];
    for (int i = 0; i < 1000; i++) buf[i] = (uint8_t)(i * 131 + 7);
    uint32_t whole = crc32c(buf, sizeof buf);
    int bad = 0;
    for (size_t split = 0; split <= sizeof buf; split++)
        bad += crc32c_update(crc32c(buf, split), buf + split, sizeof buf - split) != whole;
    CHECK_MSG(bad == 0, "%d split points disagree", bad);
    return check_report("crc32c");
}
