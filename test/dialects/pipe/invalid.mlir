// RUN: hotstage-opt %s -split-input-file -verify-diagnostics

// expected-error@+1 {{chunk_ranks names rank 2 of 2}}
pipe.pipeline schedule "1f1b" stages 2 replicas 1 microbatches 1 chunk_ranks [0, 2] {
}

// -----

pipe.pipeline schedule "1f1b" stages 2 replicas 1 microbatches 1 chunk_ranks [0, 1] {
  // expected-error@+1 {{rank 2 of a pipeline of 2 stages}}
  pipe.rank 2 {
  }
}

// -----

pipe.pipeline schedule "1f1b" stages 2 replicas 1 microbatches 1 chunk_ranks [0, 1] {
  pipe.rank 0 {
    // expected-error@+1 {{chunk 1 lives on rank 1, not rank 0}}
    pipe.forward chunk 1 microbatch 0
  }
}

// -----

pipe.pipeline schedule "1f1b" stages 2 replicas 1 microbatches 2 chunk_ranks [0, 1] {
  pipe.rank 0 {
    // expected-error@+1 {{microbatch 2 of a step of 2 microbatches}}
    pipe.backward chunk 0 microbatch 2
  }
}

// -----

pipe.pipeline schedule "1f1b" stages 2 replicas 1 microbatches 1 chunk_ranks [0, 1] {
  pipe.rank 0 {
    // expected-error@+1 {{kind must be activation or gradient, got 'weights'}}
    pipe.send "weights" chunk 0 microbatch 0 to 1
  }
}

// -----

pipe.pipeline schedule "1f1b" stages 3 replicas 1 microbatches 1 chunk_ranks [0, 1, 2] {
  pipe.rank 0 {
    // expected-error@+1 {{the activation of chunk 0 goes from rank 0 to rank 1, not to rank 2 on rank 0}}
    pipe.send "activation" chunk 0 microbatch 0 to 2
  }
}

// -----

pipe.pipeline schedule "1f1b" stages 2 replicas 1 microbatches 1 chunk_ranks [0, 1] {
  pipe.rank 0 {
    // expected-error@+1 {{chunk 0 has no previous chunk to take its gradient}}
    pipe.send "gradient" chunk 0 microbatch 0 to 1
  }
}

// -----

pipe.pipeline schedule "zb_v" stages 2 replicas 1 microbatches 1 chunk_ranks [0, 1, 1, 0] {
  pipe.rank 1 {
    // expected-error@+1 {{chunks 1 and 2 share rank 1: nothing to transfer}}
    pipe.send "activation" chunk 1 microbatch 0 to 1
  }
}

// -----

// expected-error@+1 {{the activation of chunk 0, microbatch 0 from rank 0 to rank 1 is sent 1 time(s) and received 0}}
pipe.pipeline schedule "1f1b" stages 2 replicas 1 microbatches 1 chunk_ranks [0, 1] {
  pipe.rank 0 {
    pipe.send "activation" chunk 0 microbatch 0 to 1
  }
  pipe.rank 1 {
  }
}

// -----

// expected-error@+1 {{rank 0 waits for the gradient of chunk 1, microbatch 0 from rank 1, which never sends it}}
pipe.pipeline schedule "1f1b" stages 2 replicas 1 microbatches 1 chunk_ranks [0, 1] {
  pipe.rank 0 {
    pipe.recv "gradient" chunk 1 microbatch 0 from 1
  }
}

// -----

pipe.pipeline schedule "1f1b" stages 2 replicas 1 microbatches 1 chunk_ranks [0, 1] {
  pipe.rank 0 {
  }
  // expected-error@+1 {{rank 0 appears twice}}
  pipe.rank 0 {
  }
}
