"""`make bench`: per-call costs as ratios against raw floors measured in the same run."""
