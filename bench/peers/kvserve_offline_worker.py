"""kvserve's engine run as the peers run theirs: offline, in-process, token ids in, under the
project's own venv (see worker_io for the protocol).

The same artifact, scheduler, update stage (sampling and detokenizing) and engine step the
server runs (server/app.py wires them alike), minus the front door: every request is handed
to the engine before its first step and `step()` runs until none is left; each request's
tokens are timed as the step emits them. bench/peers.py runs it beside the gRPC figure of
the same artifact, so the share the front door and its client take is measured, not guessed.
"""

from __future__ import annotations

from worker_io import Arrivals, WorkerResult, Workload, worker_main

from server.app import engine_parts, load_model
from server.cli import parse_args
from server.engine import Engine
from server.request import Request
from server.sampling import SamplingParams
from server.text_stream import detokenizer
from server.update import Updater


def load(work: Workload) -> Engine:
    """The engine as `kvserve-serve` builds it, with the flags bench/peers.py gives the
    served twin (option `serve_flags`)."""
    config = parse_args(["--model", work.model, *work.options["serve_flags"].split()])
    model = load_model(config)
    scheduler, run_plan = engine_parts(config, model.runner)
    m = model.manifest
    updater = Updater(m.eos_token_id, m.architecture.max_positions, detokenizer(model.tokenizer))
    return Engine(model.runner, scheduler, updater, execute=run_plan)


def timed(clock: Arrivals, request: int):
    """The request's `emit`: called by `step()`, in this thread."""
    return lambda event: clock.add(request, len(event.token_ids))


def generate(engine: Engine, work: Workload) -> WorkerResult:
    clock = Arrivals(len(work.prompts))
    clock.hand_over()
    for i, (prompt, n) in enumerate(zip(work.prompts, work.new_tokens, strict=True)):
        params = SamplingParams(max_new_tokens=n, ignore_eos=True)
        engine.submit(Request(f"r{i}", list(prompt), params, timed(clock, i)))
    while engine.busy():
        engine.step()
    return clock.result(work.options["engine"])


if __name__ == "__main__":
    raise SystemExit(worker_main(load, generate))
