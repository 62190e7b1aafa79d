"""The batches of the coming steps, decoded ahead in worker processes (train.py --data-workers N).

A run's step number is its data position: the batch of (step, micro-batch) is drawn from generators seeded by the
step alone (machinery/loop.py data_draws), so it is the same with 0 or N workers and after --resume.

    python -m pytest tests/machinery/test_batches.py     # a batch is the same with 0 and 2 workers
"""

import torch


class StepLoader:
    """The batch of each (step, micro-batch) of a run: data.batch(B, rng, rows) with the numpy generator, B and rows
    that draws(step, micro) gives (loop.data_draws with its first arguments bound: seeded by the step alone).

    workers=0: drawn and decoded in this process when asked, as train.py always did. workers=N: a torch DataLoader
    decodes the keys (step, micro) that come next, in order, in N processes, `prefetch` batches ahead of each, while
    this process trains. A worker draws a key's batch from the key's own seed, exactly as this process would, so a
    batch is the same with any number of workers, and after --resume (the step number is the data position): the
    first key asked for starts the sequence there, as does a key out of sequence (the step after a micro-batch with
    a non-finite loss). The unusable rows a worker met come back with its batch and are counted here
    (VideoFolder.count_bad) as if this process had met them, so data.skipped stays exact. Any data with
    batch(n, rng, rows) works: a VideoFolder, a LatentCache, the toy world (cheap enough not to need workers).
    Each worker holds its own copy of `data` (on Linux a fork: shared until Python's reference counts touch it, so
    WebVid's 10M caption rows end up copied into each worker over a long run, a few GB each)."""

    def __init__(self, data, draws, workers=0, micros=1, prefetch=2):
        self.data, self.draws, self.workers, self.micros, self.prefetch = data, draws, workers, micros, prefetch
        self.it, self.next = None, None

    def batch(self, step, micro):
        """-> what data.batch gives for this key: (video (b, 3, t, h, w) in [-1, 1], captions) for videos."""
        if not self.workers:
            rng, n, rows = self.draws(step, micro)
            return self.data.batch(n, rng, rows)
        if (step, micro) != self.next:  # the first key, or one out of sequence: (re)start the workers there
            self.close()
            # a generator of its own: the DataLoader seeds its workers from it, not from the global RNG (dropout)
            self.it = iter(torch.utils.data.DataLoader(
                KeyedBatches(self.data, self.draws), batch_size=None, sampler=keys(step, micro, self.micros),
                num_workers=self.workers, prefetch_factor=self.prefetch, collate_fn=as_is, generator=torch.Generator()))
        got = next(self.it)
        if isinstance(got, Exception):  # raised in a worker: raised here as it was (one line, not a worker's dump)
            raise got
        x, caps, bad = got
        self.next = next_key(step, micro, self.micros)
        if bad:
            self.data.count_bad(bad)
        return x, caps

    def close(self):
        """Stops the workers (the DataLoader's iterator does when it is dropped, as it is with the StepLoader)."""
        self.it = self.next = None


def next_key(step, micro, micros):
    return (step, micro + 1) if micro + 1 < micros else (step + 1, 0)


def keys(step, micro, micros):
    """(step, micro) and every key after it, in the order training asks for them. Without end: the workers decode
    at most workers x prefetch batches past the last step. (A function, not a method: a generator holding the
    StepLoader would make a reference cycle, and the workers would outlive it until the garbage collector ran.)"""
    while True:
        yield step, micro
        step, micro = next_key(step, micro, micros)


class KeyedBatches(torch.utils.data.Dataset):
    """What a StepLoader worker runs: key (step, micro) -> (x, captions, the unusable rows met), or the error."""

    def __init__(self, data, draws):
        self.data, self.draws = data, draws

    def __getitem__(self, key):
        try:
            rng, n, rows = self.draws(*key)
            if not hasattr(self.data, "draw"):  # the toy world, a latent cache: no unusable rows
                return (*self.data.batch(n, rng, rows), [])
            x, caps, bad = self.data.draw(n, rng, rows)
            self.data.count_bad(bad)            # this worker's copy: a known-bad row is not decoded again
            return x, caps, bad
        except (ValueError, OSError, RuntimeError) as e:
            return e


def as_is(x):
    """The DataLoader's collate_fn: a batch comes out as the worker made it (a function: workers may pickle it)."""
    return x
