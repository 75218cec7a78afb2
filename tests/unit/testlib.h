/* A minimal unit-test harness: TEST(name) functions registered in a table, CHECK macros that
 * report file:line and fail the test, SKIP with a reason. Each test binary prints one line per
 * test and exits non-zero if any failed. */
#pragma once
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct test_case {
	const char *name;
	void (*fn)(void);
};

/* Set by CHECK failures and SKIP inside the running test; read by test_main. */
extern int test_failed;
extern const char *test_skip_reason;

#define CHECK(cond)                                                                          \
	do {                                                                                 \
		if (!(cond)) {                                                               \
			fprintf(stderr, "  %s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
			test_failed = 1;                                                     \
			return;                                                              \
		}                                                                            \
	} while (0)
#define CHECK_MSG(cond, ...)                                                                 \
	do {                                                                                 \
		if (!(cond)) {                                                               \
			fprintf(stderr, "  %s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #cond); \
			fprintf(stderr, __VA_ARGS__);                                        \
			fprintf(stderr, "\n");                                               \
			test_failed = 1;                                                     \
			return;                                                              \
		}                                                                            \
	} while (0)
#define CHECK_EQ_INT(a, b)                                                                   \
	do {                                                                                 \
		long long a_ = (long long)(a), b_ = (long long)(b);                          \
		if (a_ != b_) {                                                              \
			fprintf(stderr, "  %s:%d: CHECK failed: %s == %s (%lld != %lld)\n", __FILE__, \
				__LINE__, #a, #b, a_, b_);                                   \
			test_failed = 1;                                                     \
			return;                                                              \
		}                                                                            \
	} while (0)
#define CHECK_STREQ(a, b)                                                                    \
	do {                                                                                 \
		const char *a_ = (a), *b_ = (b);                                             \
		if (!a_ || !b_ || strcmp(a_, b_) != 0) {                                     \
			fprintf(stderr, "  %s:%d: CHECK failed: %s == %s (\"%s\" != \"%s\")\n", \
				__FILE__, __LINE__, #a, #b, a_ ? a_ : "(null)", b_ ? b_ : "(null)"); \
			test_failed = 1;                                                     \
			return;                                                              \
		}                                                                            \
	} while (0)
#define SKIP(reason)                        \
	do {                                \
		test_skip_reason = (reason); \
		return;                     \
	} while (0)

int test_main(const struct test_case *cases, size_t n, int argc, char **argv);

#define TEST_MAIN(...)                                                                    \
	int test_failed;                                                                  \
	const char *test_skip_reason;                                                     \
	int main(int argc, char **argv)                                                   \
	{                                                                                 \
		static const struct test_case cases_[] = {__VA_ARGS__};                   \
		return test_main(cases_, sizeof(cases_) / sizeof(cases_[0]), argc, argv); \
	}                                                                                 \
	int test_main(const struct test_case *cases, size_t n, int argc, char **argv)    \
	{                                                                                 \
		int passed = 0, failed = 0, skipped = 0;                                  \
		for (size_t i = 0; i < n; i++) {                                          \
			if (argc > 1 && strcmp(argv[1], cases[i].name) != 0)              \
				continue;                                                 \
			test_failed = 0;                                                  \
			test_skip_reason = NULL;                                          \
			cases[i].fn();                                                    \
			if (test_failed) {                                                \
				failed++;                                                 \
				printf("FAIL %s\n", cases[i].name);                       \
			} else if (test_skip_reason) {                                    \
				skipped++;                                                \
				printf("SKIP %s: %s\n", cases[i].name, test_skip_reason); \
			} else {                                                          \
				passed++;                                                 \
				printf("ok   %s\n", cases[i].name);                       \
			}                                                                 \
			fflush(stdout);                                                   \
		}                                                                         \
		printf("%d passed, %d failed, %d skipped\n", passed, failed, skipped);   \
		return failed ? 1 : 0;                                                    \
	}

#define T(fn) {#fn, fn}
