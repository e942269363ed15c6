"""Run artifacts layer: what runs leave on disk and its readers - our per-epoch checkpoints and
meta.json (checkpoint), a Tune trial's checkpoint folders and done.json (trialfiles), and the
published code's run folders, dora_params, training_res.csv and split indices (published)."""
