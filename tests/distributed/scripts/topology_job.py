"""The coordinator's topology under real torchrun: one scenario per --scenario.

No process group of the job's own is started (as in a job whose collectives are NCCL's),
so every socket a rank holds beyond the launcher's store is tracker's. Ranks hand off
through keys in torchrun's agent store, never by sleeping.
"""

import argparse
import datetime
import json
import os
import signal
import time

import psutil
import torch.distributed as dist

import tracker

p = argparse.ArgumentParser()
p.add_argument("--store", required=True)
p.add_argument("--scenario", required=True)
args = p.parse_args()

rank = int(os.environ["RANK"])
world = int(os.environ["WORLD_SIZE"])


def say(line: str) -> None:
    os.write(1, (line + "\n").encode())  # one write per line: ranks share the pipe


def agent_store() -> dist.Store:
    agent = dist.TCPStore(
        os.environ["MASTER_ADDR"],
        int(os.environ["MASTER_PORT"]),
        is_master=False,
        timeout=datetime.timedelta(seconds=120),
    )
    return dist.PrefixStore("topology", agent)


def sockets(pid: int) -> dict[str, int]:
    """Established TCP connections and connected Unix sockets of process ``pid``."""
    proc = psutil.Process(pid)
    tcp = [c for c in proc.net_connections("tcp") if c.status == psutil.CONN_ESTABLISHED]
    unix = [c for c in proc.net_connections("unix") if c.status != psutil.CONN_LISTEN]
    return {"tcp": len(tcp), "unix": len(unix), "fds": proc.num_fds()}


run = tracker.init_run(project="topo", store=args.store, system_metrics=False)
say(f"RUN_ID {rank} {run.id}")

if args.scenario == "sockets":
    for step in range(5):
        run.log({"loss": float(rank * 10 + step)}, step=step)
    run.flush()  # sent: this rank is connected (and, on a leader, its node's upstream too)
    # Counted once every rank is connected; the script's own store client (one TCP
    # connection, the job's store) is in every count.
    store = agent_store()
    store.set(f"flushed/{rank}", "1")
    store.wait([f"flushed/{r}" for r in range(world)])
    counts = sockets(os.getpid())
    store.set(f"counted/{rank}", "1")
    store.wait([f"counted/{r}" for r in range(world)])
    ingest_process = getattr(run._gatherer, "proc", None) if rank == 0 else None
    if ingest_process is not None:  # None with TRACKER_RANK_TRANSPORT=gloo, to compare
        counts["ingest"] = sockets(ingest_process.proc.pid)
    say(f"SOCKETS {rank} {json.dumps(counts)}")
    store.set(f"reported/{rank}", "1")
    store.wait([f"reported/{r}" for r in range(world)])
    run.close()

elif args.scenario == "silent":
    # Rank 1 logs three steps and then nothing, alive, while rank 0 goes on.
    # Every rank watches "loss" (as a script does); rank 1's NaN and its value past the
    # threshold are found by the writer's ingest, not by rank 0's writer.
    run.watch("loss", above=100)
    store = agent_store()
    if rank == 1:
        store.wait(["writer/watching"])
        for step, value in enumerate((0.0, float("nan"), 500.0)):
            run.log({"loss": value}, step=step)
        run.flush()
        store.wait(["writer/done"], datetime.timedelta(seconds=120))
    else:
        time.sleep(0.5)  # rank 0's rules reach its ingest within 0.2 s
        store.set("writer/watching", "1")
        limit = float(os.environ["TRACKER_RANK_SILENT_AFTER"])
        t0 = time.monotonic()
        step = 0
        while time.monotonic() - t0 < limit + 3.5:
            run.log({"loss": float(step)}, step=step)
            step += 1
            time.sleep(0.05)
        run.flush()
        store.set("writer/done", "1")
    run.close()

elif args.scenario == "kill_writer":
    # Rank 1's points reach the ingest; then rank 0's training process is SIGKILLed.
    store = agent_store()
    if rank == 1:
        for step in range(10):
            run.log({"loss": float(step)}, step=step)
        run.flush()  # sent to the ingest
        store.set("rank1/sent", "1")
        while True:
            signal.pause()  # torchrun ends us once rank 0 is gone
    else:
        say(f"INGEST_PID {run._gatherer.proc.proc.pid}")
        store.wait(["rank1/sent"])
        os.kill(os.getpid(), signal.SIGKILL)

elif args.scenario == "leader_killed":
    # Two nodes of two ranks; node 1's leader (its local rank 0) dies once everyone has
    # logged; rank 0's close must not wait on it.
    store = agent_store()
    for step in range(6):
        run.log({"loss": float(step)}, step=step)
    run.flush()
    store.set(f"logged/{rank}", "1")
    store.wait([f"logged/{r}" for r in range(world)])
    if int(os.environ["GROUP_RANK"]) == 1 and int(os.environ["LOCAL_RANK"]) == 0:
        time.sleep(0.5)  # five of the leader's forwarding intervals: what was sent is upstream
        os.kill(os.getpid(), signal.SIGKILL)
    if rank == 0:
        # The others close on their own (the dead leader never does): then rank 0.
        store.wait([f"closed/{r}" for r in (1, 3)], datetime.timedelta(seconds=120))
        t0 = time.monotonic()
        run.close()
        say(f"CLOSE_SECONDS {rank} {time.monotonic() - t0:.2f}")
    else:
        run.close()
        store.set(f"closed/{rank}", "1")

elif args.scenario == "reopen":
    # The script opens its run again while it is open (a re-created callback): rank 0
    # gets the same run, and its one ingest serves both openings of rank 1.
    again = tracker.init_run(project="topo", store=args.store, system_metrics=False, run_id=run.id)
    run.log({"loss": float(rank * 10)}, step=0)
    again.log({"loss": float(rank * 10 + 1)}, step=1)
    run.flush()
    again.flush()
    if rank == 0:
        me = psutil.Process()
        ingests = [c for c in me.children() if "tracker.rank_utils.ingest" in c.cmdline()]
        say(f"INGESTS {len(ingests)} {again is run}")
    run.close()
    again.close()
