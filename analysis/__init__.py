"""Statistics for A/B experiments: pure functions over counts and samples (scipy), tested against references.

* ``analysis.proportions`` — Wilson intervals, Newcombe difference intervals, χ² tests, Cohen's h;
* ``analysis.means`` — Welch's t-test and interval, Cohen's d;
* ``analysis.power`` — power, minimum detectable effect and sample size for two proportions;
* ``analysis.sequential`` — always-valid p-values and confidence sequences (normal mixture SPRT);
* ``analysis.srm`` — sample-ratio mismatch;
* ``analysis.multiple`` — Holm and Benjamini–Hochberg;
* ``analysis.paired`` — champion vs shadow on the same requests: disagreement and McNemar.
"""
