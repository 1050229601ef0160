/* optim_cpu: the global gradient norm with its clip coefficient, and the AdamW step.
 *
 * Design: clipping is not a pass over the gradients; grad_norm only computes the coefficient,
 * and adamw_step reads it through a pointer and folds it into the gradient it reads. That saves
 * a read-modify-write of every gradient, and on the GPU the coefficient never has to come back
 * to the host. The AdamW arithmetic follows torch.optim.AdamW's single-tensor path operation by
 * operation (decay, lerp, addcmul, the two bias corrections) so states match torch's closely. */
#include "kernels_cpu.h"

void CPU_FN(grad_norm)(real *norm, real *scale, const real *const *tensors, const size_t *lens,
                       int count, float max_norm)
{
    double total = 0;
    for (int i = 0; i < count; i++) {
        const real *x = tensors[i];
        size_t n = lens[i];
        double acc = 0;
#pragma omp parallel for simd reduction(+ : acc) if (n > (1u << 16))
        for (size_t j = 0; j < n; j++) acc += (double)x[j] * x[j];
        total += acc;
    }
    double nrm = sqrt(total);
    norm[0] = (real)nrm;
    double coef = max_norm > 0 ? max_norm / (nrm + 1e-6) : 1.0;
    scale[0] = (real)(coef < 1.0 ? coef : 1.0);
}

void CPU_FN(adamw_step)(real *p, real *m, real *v, const real *g, const real *grad_scale,
                        size_t n, double lr, double beta1, double beta2, double eps,
                        double weight_decay, int step)
{
    real gs = grad_scale ? grad_scale[0] : 1;
    real decay = (real)(1.0 - lr * weight_decay);
    real b1 = (real)(1.0 - beta1), b2 = (real)beta2, b2c = (real)(1.0 - beta2);
    real step_size = (real)(lr / (1.0 - pow(beta1, step)));
    real bc2_sqrt = (real)sqrt(1.0 - pow(beta2, step));
    real e = (real)eps;
#pragma omp parallel for simd if (n > (1u << 16))
    for (size_t i = 0; i < n; i++) {
        real gi = g[i] * gs;
        real pi = p[i] * decay;
        real mi = m[i] + b1 * (gi - m[i]);
        real vi = v[i] * b2 + b2c * gi * gi;
        p[i] = pi - step_size * (mi / (cpu_sqrt(vi) / bc2_sqrt + e));
        m[i] = mi;
        v[i] = vi;
    }
}
