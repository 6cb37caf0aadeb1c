"""`python -m prresq.data.video CLIP.mp4 [--num-frames 16] [--fps F] [--grid out.png]`: a clip's metadata and
sampled timestamps (and its 4x4 global-temporal grid)."""

from __future__ import annotations

import argparse

import prresq.data.video as video
from prresq.data.video import make_grid, probe, read_frames


def main() -> None:
    parser = argparse.ArgumentParser(description=video.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path")
    parser.add_argument("--num-frames", type=int, default=None)
    parser.add_argument("--fps", type=float, default=None)
    parser.add_argument("--grid", default=None, help="write the 4x4 global-temporal grid here")
    args = parser.parse_args()
    info = probe(args.path)
    print(info)
    frames, stamps = read_frames(args.path, args.num_frames, args.fps)
    print(f"{len(frames)} frames of {frames[0].size} at t = {[round(s, 3) for s in stamps]}")
    if args.grid:
        make_grid(read_frames(args.path, 16)[0]).save(args.grid)
        print(f"grid -> {args.grid}")


if __name__ == "__main__":
    main()
