/*
 * The C ABI in one file: connect, enroll if needed, request a payment,
 * print the token as hex.
 *
 *   cc pay.c -I../include -L<dir of libandroid_bridge.so> -landroid_bridge -o pay
 *   ./pay unix:target/sim/mvmm.sock "$(cat target/sim/device.pub)"
 */
#include <stdio.h>
#include <string.h>

#include "mvmm_bridge.h"

static int failed(const char *what, MvmmResult result) {
  fprintf(stderr, "%s failed (%d): %s\n", what, (int)result, mvmm_last_error());
  return (int)result;
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: %s TRANSPORT DEVICE_KEY_HEX\n", argv[0]);
    return 2;
  }
  MvmmBridge *bridge = NULL;
  MvmmResult r = mvmm_bridge_connect(argv[1], argv[2], &bridge);
  if (r != MVMM_OK) return failed("connect", r);

  MvmmStatus status;
  r = mvmm_bridge_status(bridge, &status);
  if (r != MVMM_OK) return failed("status", r);
  printf("protocol %u, %u credential(s)\n", status.protocol_version, status.credentials);

  MvmmCredential cards[8];
  size_t count = 0;
  r = mvmm_bridge_list_credentials(bridge, cards, 8, &count);
  if (r != MVMM_OK) return failed("list", r);
  if (count == 0) {
    r = mvmm_bridge_enroll(bridge, "Visa ending 4242", &cards[0]);
    if (r != MVMM_OK) return failed("enroll", r);
    printf("enrolled %s\n", cards[0].label);
  }

  uint64_t minor = 0;
  r = mvmm_parse_amount("12.505", "EUR", &minor);
  printf("12.505 EUR: %s\n", r == MVMM_INVALID_ARGUMENT ? mvmm_last_error() : "accepted?!");

  uint8_t nonce[32];
  memset(nonce, 0x42, sizeof nonce);
  uint8_t token[512];
  size_t token_len = 0;
  r = mvmm_bridge_request_payment(bridge, cards[0].id, "12.50", "EUR", "Corner Cafe", nonce,
                                  token, sizeof token, &token_len);
  if (r != MVMM_OK) {
    int code = failed("request_payment", r);
    mvmm_bridge_free(bridge);
    return code;
  }
  printf("token ");
  for (size_t i = 0; i < token_len; i++) printf("%02x", token[i]);
  printf("\n");
  mvmm_bridge_free(bridge);
  return 0;
}
