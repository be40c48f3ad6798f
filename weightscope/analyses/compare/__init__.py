"""Fine-tuned checkpoint comparison (METHODS.md section 7): does fine-tuning reweight or rotate each head's basis?

Two checkpoints of one architecture are decomposed head by head (``decompose_model``) and each head's
value-output matrix W_b (base) is compared with W_t (tuned). Row-vector convention as in ``decompose``:
``W = read.T @ diag(s) @ write``, with read/write rows u_i, v_i.

Matching (``matching.compare_heads``). For base direction i and tuned direction j the signed overlap of their
rank-one components is ``C_ij = (u_i . u'_j)(v_i . v'_j)``, so a direction only counts as kept when both what it
reads and what it writes are kept. The Hungarian assignment (``scipy.optimize.linear_sum_assignment``) on |C|
pairs every base direction with one tuned direction; |C| of the pair is its *match cosine*, arccos of it the
*matched angle*, sign(C) < 0 a flip.

Tie groups. Directions with (near-)equal singular values only define a subspace, so the vectors inside a group are
put in a canonical basis before matching. By perturbation theory (Davis-Kahan) a change of spectral norm
||W_t - W_b||_2 can mix two directions whose singular values differ by a small fraction of it by any angle, so a
head's tie groups are the decomposition's own ``HeadSVD.groups`` joined with runs of neighbours whose gap is at most
``tie_factor * ||W_t - W_b||_2``. Base group: the eigenvectors of sym(X_GG), X_ij = u_i W_t v_j^T (the axes along
which the tuning rescaled the group); tuned group: the orthogonal Procrustes rotation that best pairs it with the
base rows it overlaps most. Both are rotations inside a group: W_b, W_t and every energy are unchanged by them.

Energy SHARES (exact, no threshold). With a_i = u_i W_t v_i^T and b_i = u_i W_b v_i^T (= s_i outside groups), and the
components u_i v_i^T orthonormal in the Frobenius inner product,

    ||W_t - W_b||_F^2 = sum_i (a_i - b_i)^2  +  ||W_t - sum_i a_i u_i v_i^T||_F^2 .
                        in-basis energy          off-basis energy

In-basis: the change that rescales the base's own components (a pure rescaling by any factor, 0 and negative
included, is 100 % in-basis). Off-basis: the rest -- directions turning, by any angle (a turn by theta of a
direction of weight s puts s^2 (1 - cos theta)^2 in-basis and s^2 sin^2 theta off-basis), and new directions.
Small turns spread over all directions make the off-basis share large although no direction counts as rotated.
Energies are summed over heads and layers (energy-weighted shares). Base directions below the noise floor have
no component to rescale: what appears there is off-basis.

Direction COUNTS (thresholds). "rotated": match cosine below ``cos_threshold`` (matched angle above
arccos(cos_threshold), 36.9 deg by default), or born from a direction below the noise floor; "reweighted": well
matched and the signed ratio sigma'_j / sigma_i off 1 by more than ``ratio_tol``, or flipped, or rescaled to below
the noise floor (the partner's vectors are then arbitrary: a direction whose whole image ||u_i W_t||, ||W_t v_i^T||
is below the floor is a rescaling by ~0); "stable" otherwise.

Noise floor (``noise``). The storage precision of each checkpoint is read from its values (bf16, fp16, fp32); the
expected ||W_t - W_b||_F that rounding alone makes is ``noise``; a head whose change is at most
max(change_tol x ||W_b||_F, noise_factor x noise) is unchanged (all stable), and singular values below
noise_factor x noise count as zero. So an fp16 or bf16 re-save of the same weights is "no change".

Intruder dimensions (Shuttleworth et al., "LoRA vs Full Fine-tuning: An Illusion of Equivalence", arXiv 2410.21228,
sec. 4): tuned singular directions whose best |cos| with every base write direction is below epsilon
(``HeadChange.intruders``, ``Comparison.intruder_counts`` over an epsilon sweep). Also reported: principal angles
between the top-k base and tuned write subspaces and the distribution of log2 sigma ratios of matched directions.

Labels: ``label_comparison`` attaches the concept explanations of both models (``inspect_model`` results, write
side) to every direction; ``amplified_concepts`` / ``suppressed_concepts`` rank them.
"""
from .checkpoints import DEFAULTS, SPEC_HELP, PreparedBase, architecture_of, check_same_architecture, check_settings, compare_decompositions, compare_models, compare_weights, compare_with_base, load_checkpoint, parse_checkpoint_spec, prepare_base, split_options, SpecLoading
from .labels import inspect_for_labels, label_comparison
from .matching import compare_heads
from .noise import rounding_noise, storage_precision
from .results import EPSILONS, FORMAT, KINDS, Comparison, DirectionChange, HeadChange, comparisons_to_json, load_comparisons

__all__ = [
    "DEFAULTS", "EPSILONS", "FORMAT", "KINDS", "SPEC_HELP", "Comparison", "DirectionChange", "HeadChange",
    "PreparedBase", "SpecLoading", "architecture_of", "check_same_architecture", "check_settings", "compare_decompositions",
    "compare_heads", "compare_models", "compare_weights", "compare_with_base", "comparisons_to_json",
    "inspect_for_labels", "label_comparison", "load_checkpoint", "load_comparisons", "parse_checkpoint_spec",
    "prepare_base", "rounding_noise", "split_options", "storage_precision",
]
