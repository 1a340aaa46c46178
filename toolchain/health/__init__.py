"""Model health: does the audio a run scored still look like what the model was validated on?

`reference` is what "normal" looks like (built from the validation windows at training, carried in the model
file's metadata); `sketch` is a run's mergeable summary of the windows it scored (built while scoring, one per
shard); `assess` compares the two (statistics, verdict, JSON, markdown); `trend` plots verdicts over time.
numpy and scipy only: a scoring-only install pays nothing for it.
"""
