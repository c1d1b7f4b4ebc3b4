/* Small helpers shared by every program: memory, parsing, files, clocks. */
#ifndef RM_UTIL_H
#define RM_UTIL_H

#include <stddef.h>
#include <stdint.h>

void *xmalloc(size_t);
void *xcalloc(size_t, size_t);
void *xrealloc(void *, size_t);
char *xstrdup(const char *);
char *xstrndup(const char *, size_t);
void malloc_keep(size_t);
void mem_release(void);

int parse_size(const char *, uint64_t *);
int parse_duration_ms(const char *, uint64_t *);
int parse_onoff(const char *, int *);
int parse_hostport(const char *, char *, size_t, uint16_t *);

int rm_rf(const char *);
int mkdir_p(const char *, unsigned int);
void lock_dir(const char *, const char *);
void random_hex(char *, size_t);
uint64_t now_ms(void);
uint64_t now_us(void);
int sock_hostport(int, char *, size_t, uint16_t *);
struct sockaddr;
int sock_is_loopback(const struct sockaddr *);
int parse_cidr(const char *, char *, size_t);

uint32_t get_be32(const uint8_t *);
void put_be32(uint8_t *, uint32_t);

#endif
