/*
 * qemu_power_cut.c - a QEMU TCG plugin that pulls the plug: it counts the guest instructions and ends
 * the emulator, from the host side, right before instruction N + 1 would execute (`qtrain-run
 * --power-cut-at-instruction N`). Built for the host as a shared library by power_cut.py.
 *
 *   qemu-system-arm ... -icount shift=0 -plugin libqtrain_power_cut.so,at=N
 *
 * The count is exact and deterministic: an instruction callback runs before every executed guest
 * instruction (TCG re-executes an I/O instruction that ends a translation block early with only its
 * memory callbacks, so nothing is counted twice), and the guest runs single-threaded under -icount.
 * At the cut the process ends with _exit: no QEMU shutdown, no flush, nothing more reaches any file
 * the guest had open (semihosting writes are plain write(2) calls, so everything written before the
 * cut is in the file). The status is QTRAIN_POWER_CUT_STATUS and stderr gets one line:
 *   qtrain-power-cut: after N instructions
 * With `count=on` instead of at=N, nothing is cut and the total is printed at exit:
 *   qtrain-power-cut: N instructions in total
 *
 * The plugin API declarations below are the few of QEMU's include/qemu/qemu-plugin.h (API version 1,
 * QEMU 6.0 - 8.x) this file uses; that header is not installed by Debian's qemu packages.
 */
#include <inttypes.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define QTRAIN_POWER_CUT_STATUS 86

/* ---- from qemu-plugin.h (API version 1) ---- */
typedef uint64_t qemu_plugin_id_t;
struct qemu_info_t;
struct qemu_plugin_tb;
struct qemu_plugin_insn;
enum qemu_plugin_cb_flags { QEMU_PLUGIN_CB_NO_REGS, QEMU_PLUGIN_CB_R_REGS, QEMU_PLUGIN_CB_RW_REGS };
typedef void (*qemu_plugin_vcpu_udata_cb_t)(unsigned int vcpu_index, void *userdata);
typedef void (*qemu_plugin_vcpu_tb_trans_cb_t)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);
typedef void (*qemu_plugin_udata_cb_t)(qemu_plugin_id_t id, void *userdata);
void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, qemu_plugin_vcpu_tb_trans_cb_t cb);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
struct qemu_plugin_insn *qemu_plugin_tb_get_insn(const struct qemu_plugin_tb *tb, size_t idx);
void qemu_plugin_register_vcpu_insn_exec_cb(struct qemu_plugin_insn *insn, qemu_plugin_vcpu_udata_cb_t cb,
                                            enum qemu_plugin_cb_flags flags, void *userdata);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, qemu_plugin_udata_cb_t cb, void *userdata);
/* ---- end of qemu-plugin.h ---- */

__attribute__((visibility("default"))) int qemu_plugin_version = 1;

static uint64_t executed; /* instructions that have executed */
static uint64_t cut_at;   /* stop before instruction cut_at + 1 */
static int cutting;

/* One line on stderr with write(2): safe right before _exit. */
static void say(const char *before, uint64_t value, const char *after) {
    char line[96];
    int n = snprintf(line, sizeof line, "qtrain-power-cut: %s%" PRIu64 "%s\n", before, value, after);
    if (n > 0) {
        ssize_t ignored = write(STDERR_FILENO, line, (size_t)n);
        (void)ignored;
    }
}

static void before_instruction(unsigned int vcpu_index, void *userdata) {
    (void)vcpu_index;
    (void)userdata;
    if (cutting && executed == cut_at) {
        say("after ", executed, " instructions");
        _exit(QTRAIN_POWER_CUT_STATUS);
    }
    executed++;
}

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb) {
    (void)id;
    size_t n = qemu_plugin_tb_n_insns(tb);
    for (size_t i = 0; i < n; i++) {
        qemu_plugin_register_vcpu_insn_exec_cb(qemu_plugin_tb_get_insn(tb, i), before_instruction,
                                               QEMU_PLUGIN_CB_NO_REGS, NULL);
    }
}

static void at_exit(qemu_plugin_id_t id, void *userdata) {
    (void)id;
    (void)userdata;
    say("", executed, " instructions in total");
}

__attribute__((visibility("default"))) int qemu_plugin_install(qemu_plugin_id_t id, const struct qemu_info_t *info,
                                                              int argc, char **argv) {
    (void)info;
    for (int i = 0; i < argc; i++) {
        if (strncmp(argv[i], "at=", 3) == 0) {
            char *end;
            cut_at = strtoull(argv[i] + 3, &end, 10);
            if (*end != '\0' || argv[i][3] == '\0') {
                fprintf(stderr, "qtrain-power-cut: bad argument '%s' (at=N)\n", argv[i]);
                return -1;
            }
            cutting = 1;
        } else if (strcmp(argv[i], "count=on") != 0) {
            fprintf(stderr, "qtrain-power-cut: unknown argument '%s' (at=N or count=on)\n", argv[i]);
            return -1;
        }
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
    qemu_plugin_register_atexit_cb(id, at_exit, NULL);
    return 0;
}
