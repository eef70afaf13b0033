/* Experiment: would two threads of our own speed up the panel product's time loop?
 *
 * The panel micro-kernel of src/rnnfast/_core/simd_panel.h (8 rows x 3 AVX-512 vectors), T=50
 * steps of out[t] = out[t-1] @ packed, the panels of each step split between 1 or 2 threads
 * that meet at a spin barrier after every step (the recursion's only synchronisation).
 * Prints microseconds per step and GFLOP/s for each thread count. With a third argument, each
 * timed loop follows a 1024^3 SciPy OpenBLAS sgemm on its default two threads, as the input
 * projection GEMM precedes the time loop in rnn_forward.
 *
 *     L=$(python -c "import scipy, pathlib; print(pathlib.Path(scipy.__file__).parent.parent / 'scipy.libs')")
 *     gcc -O3 -mavx512f -mfma -pthread -o panel_threads bench/experiments/panel_threads.c \
 *         $L/libscipy_openblas-*.so -Wl,-rpath,$L
 *     ./panel_threads B H [blas]   (H a multiple of 48, B of 8; e.g. 32 288, 64 1008)
 *
 * Not part of the package: it decided against a thread pool of our own (README, "What the
 * kernels do").
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <pthread.h>
#include <stdatomic.h>
typedef float V __attribute__((vector_size(64), aligned(4), may_alias));
enum {VL=16, NR=3, NRW=NR*VL};
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
#define KERN(MR) static inline __attribute__((always_inline)) void k##MR(float*out,int ldo,const float*a,int lda,const float*pm,int k){ \
  V acc[MR][NR]; for(int r=0;r<MR;r++)for(int v=0;v<NR;v++)acc[r][v]=*(V*)(out+r*ldo+v*VL); \
  for(int j=0;j<k;j++){ const float*mr=pm+j*NRW; V w0=*(const V*)mr,w1=*(const V*)(mr+VL),w2=*(const V*)(mr+2*VL); \
    for(int r=0;r<MR;r++){ float s=a[r*lda+j]; acc[r][0]+=s*w0; acc[r][1]+=s*w1; acc[r][2]+=s*w2;}} \
  for(int r=0;r<MR;r++)for(int v=0;v<NR;v++)*(V*)(out+r*ldo+v*VL)=acc[r][v];}
KERN(8)
static void panels(float*out,const float*a,int rows,int k,int n,const float*pm,int p0,int p1){
  for(int p=p0;p<p1;p++){const float*pp=pm+(size_t)p*k*NRW; for(int r=0;r+8<=rows;r+=8)k8(out+r*n+p*NRW,n,a+r*k,k,pp,k);}}
int B,H,T=50; float *pm,*hs; atomic_int step_done[2]; 
static void run(int tid,int nth){int P=H/NRW; int p0=P*tid/nth,p1=P*(tid+1)/nth;
  for(int t=1;t<T;t++){ panels(hs+(size_t)t*B*H,hs+(size_t)(t-1)*B*H,B,H,H,pm,p0,p1);
    if(nth>1){ atomic_store_explicit(&step_done[tid],t,memory_order_release); while(atomic_load_explicit(&step_done[1-tid],memory_order_acquire)<t) __builtin_ia32_pause(); }}}
static void* worker(void*x){run(1,2);return 0;}
void scipy_sgemm_(const char*,const char*,const int*,const int*,const int*,const float*,const float*,const int*,const float*,const int*,const float*,float*,const int*);
static float *GA,*GB,*GC; static void big_gemm(){int n=1024; float one=1,zero=0; scipy_sgemm_("N","N",&n,&n,&n,&one,GA,&n,GB,&n,&zero,GC,&n);}
int main(int c,char**v){B=atoi(v[1]);H=atoi(v[2]); int withblas=c>3;
  GA=malloc(4<<20);GB=malloc(4<<20);GC=malloc(4<<20); for(int i=0;i<1<<20;i++){GA[i]=GB[i]=0.001f;}
  pm=aligned_alloc(64,4*(size_t)H*H); hs=aligned_alloc(64,4*(size_t)T*B*H);
  for(size_t i=0;i<(size_t)H*H;i++)pm[i]=1e-4f; for(size_t i=0;i<(size_t)T*B*H;i++)hs[i]=0.01f;
  for(int nth=1;nth<=2;nth++){double best=1e9; for(int rep=0;rep<7;rep++){ step_done[0]=step_done[1]=0;
    if(withblas) big_gemm(); double t0=now(); pthread_t th; if(nth==2)pthread_create(&th,0,worker,0); run(0,nth); if(nth==2)pthread_join(th,0); double t=(now()-t0)/(T-1); if(t<best)best=t;}
    printf("B=%d H=%d threads=%d %.2f us/step %.1f GF/s\n",B,H,nth,best*1e6,2.0*B*H*H/best/1e9);}
}
