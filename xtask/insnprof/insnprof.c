/*
 * A QEMU TCG plugin (plugin API v1, as ../shared/tools/insncount) that profiles executed guest
 * instructions by translation block: each block's start address, its instruction count and how many
 * times it ran are written at exit to out=FILE (default insnprof.txt), one block per line, hex
 * address then the two counts. insnprof.py maps the blocks to the binary's symbols.
 *
 * Build: gcc -shared -fPIC -O2 -o libinsnprof.so insnprof.c
 * Use:   qemu-aarch64 -cpu cortex-a76 -L /usr/aarch64-linux-gnu -plugin ./libinsnprof.so,out=tb.txt BIN ARGS
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef uint64_t qemu_plugin_id_t;
struct qemu_plugin_tb;
struct qemu_plugin_insn;
typedef struct qemu_info_t qemu_info_t; /* opaque here */
enum qemu_plugin_op { QEMU_PLUGIN_INLINE_ADD_U64 };

void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id,
    void (*cb)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb));
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
struct qemu_plugin_insn *qemu_plugin_tb_get_insn(const struct qemu_plugin_tb *tb, size_t idx);
uint64_t qemu_plugin_insn_vaddr(const struct qemu_plugin_insn *insn);
void qemu_plugin_register_vcpu_tb_exec_inline(struct qemu_plugin_tb *tb, enum qemu_plugin_op op,
                                              void *ptr, uint64_t imm);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id,
    void (*cb)(qemu_plugin_id_t id, void *userdata), void *userdata);

__attribute__((visibility("default"))) int qemu_plugin_version = 1;

struct block { uint64_t va, n, count; struct block *next; };
static struct block *blocks;
static const char *out_path = "insnprof.txt";

static void tb_trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    (void)id;
    struct block *b = calloc(1, sizeof *b);
    if (!b) return;
    b->n = qemu_plugin_tb_n_insns(tb);
    b->va = qemu_plugin_insn_vaddr(qemu_plugin_tb_get_insn(tb, 0));
    b->next = blocks;
    blocks = b;
    qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &b->count, 1);
}

static void report(qemu_plugin_id_t id, void *userdata)
{
    (void)id; (void)userdata;
    FILE *f = fopen(out_path, "w");
    if (!f) { perror(out_path); return; }
    for (struct block *b = blocks; b; b = b->next)
        if (b->count)
            fprintf(f, "%llx %llu %llu\n", (unsigned long long)b->va, (unsigned long long)b->n,
                    (unsigned long long)b->count);
    fclose(f);
}

__attribute__((visibility("default")))
int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc, char **argv)
{
    (void)info;
    for (int i = 0; i < argc; i++) {
        if (!strncmp(argv[i], "out=", 4)) {
            out_path = argv[i] + 4;
        } else {
            fprintf(stderr, "insnprof: bad arg '%s' (want out=FILE)\n", argv[i]);
            return -1;
        }
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, tb_trans);
    qemu_plugin_register_atexit_cb(id, report, NULL);
    return 0;
}
