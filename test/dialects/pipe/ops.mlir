// RUN: hotstage-opt %s | hotstage-opt | FileCheck %s
// A 2-stage 1F1B step with two microbatches prints back as it reads.

// CHECK: pipe.pipeline schedule "1f1b" stages 2 replicas 1 microbatches 2 chunk_ranks [0, 1] {
// CHECK-NEXT: pipe.rank 0 {
// CHECK-NEXT: pipe.forward chunk 0 microbatch 0
// CHECK-NEXT: pipe.send "activation" chunk 0 microbatch 0 to 1
// CHECK: pipe.recv "gradient" chunk 1 microbatch 0 from 1
// CHECK-NEXT: pipe.backward chunk 0 microbatch 0
// CHECK: pipe.all_reduce gradients over 1 replicas
// CHECK-NEXT: pipe.exchange "wte:grad@0" "to" 1
// CHECK-NEXT: pipe.grad_norms
// CHECK-NEXT: pipe.optimizer_step
pipe.pipeline schedule "1f1b" stages 2 replicas 1 microbatches 2 chunk_ranks [0, 1] {
  pipe.rank 0 {
    pipe.forward chunk 0 microbatch 0
    pipe.send "activation" chunk 0 microbatch 0 to 1
    pipe.forward chunk 0 microbatch 1
    pipe.send "activation" chunk 0 microbatch 1 to 1
    pipe.recv "gradient" chunk 1 microbatch 0 from 1
    pipe.backward chunk 0 microbatch 0
    pipe.recv "gradient" chunk 1 microbatch 1 from 1
    pipe.backward chunk 0 microbatch 1
    pipe.all_reduce gradients over 1 replicas
    pipe.exchange "wte:grad@0" "to" 1
    pipe.grad_norms
    pipe.optimizer_step
  }
  pipe.rank 1 {
    pipe.recv "activation" chunk 0 microbatch 0 from 0
    pipe.forward chunk 1 microbatch 0
    pipe.backward chunk 1 microbatch 0
    pipe.send "gradient" chunk 1 microbatch 0 to 0
    pipe.recv "activation" chunk 0 microbatch 1 from 0
    pipe.forward chunk 1 microbatch 1
    pipe.backward chunk 1 microbatch 1
    pipe.send "gradient" chunk 1 microbatch 1 to 0
    pipe.exchange "wte:grad@0" "from" 0
    pipe.grad_norms
    pipe.optimizer_step
  }
}
