"""Measuring: metrics (F1, ICC, accuracy), the stage-2 and stage-1 evaluators (they take
functions, not workdirs), the floor's probes (trivial, linear, CNN) and the figures."""
