"""Two or more perch-run builds against ONNX Runtime on one model, rounds interleaved: a before/after
check of a kernel change on a shared, noisy machine (compare the ratios of one run, not figures
across runs). Not part of the test command; uses ort_bench.py's session, input and timing.

  python ort_ab.py MODEL.onnx PLAN.perch PERCH_RUN[,PERCH_RUN...] [ROUNDS]

Each round: ORT, then each build, 500 inferences after 50 warm-up runs, one thread each; a round's
figure is its median latency. Prints per tool the median over rounds, the best round, and the ratio
to ORT.
"""

import statistics
import sys

import ort_bench as ob


def main():
    onnx_path, plan, builds = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
    rounds = int(sys.argv[4]) if len(sys.argv) > 4 else 20
    sess = ob.ort_session(onnx_path)
    shape = [d if isinstance(d, int) else 1 for d in sess.get_inputs()[0].shape]
    feed = {sess.get_inputs()[0].name: ob.synthetic_input(int(ob.np.prod(shape))).reshape(shape)}
    results = {"ort": []} | {b: [] for b in builds}
    for _ in range(rounds):
        results["ort"].append(ob.ort_round(sess, feed, 500, 50))
        for b in builds:
            results[b].append(ob.perch_round(b, plan, 500, 50))
    ort = statistics.median(results["ort"])
    for name, rounds_us in results.items():
        median = statistics.median(rounds_us)
        print(f"{name}: median {median:.1f} us, best round {min(rounds_us):.1f} us, {median / ort:.3f}x ORT")


if __name__ == "__main__":
    main()
