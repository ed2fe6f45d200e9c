"""Statistics for A/B experiments: pure functions over counts and samples (scipy), tested against references.

* ``analysis.proportions`` — Wilson intervals, Newcombe difference intervals, χ² tests, Cohen's h;
* ``analysis.means`` — Welch's t-test and interval, Cohen's d;
* ``analysis.clustered`` — the customer as the unit of analysis: per-customer sums, ratio metrics with a
  delta-method variance, z-tests and intervals on them, CUPED adjustment, design effect;
* ``analysis.power`` — power, minimum detectable effect and sample size for two proportions, in customers;
* ``analysis.sequential`` — always-valid p-values and confidence sequences (normal mixture SPRT), also on the
  clustered difference of all decisions so far;
* ``analysis.ab_report`` — the report: segments per arm and model version, guardrails, verdicts;
* ``analysis.simulation`` — A/A and A/B experiments simulated on generated traffic;
* ``analysis.srm`` — sample-ratio mismatch;
* ``analysis.multiple`` — Holm and Benjamini–Hochberg;
* ``analysis.paired`` — champion vs shadow on the same requests: disagreement and McNemar.
"""
