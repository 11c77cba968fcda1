"""How urgent a problem is and what to do about it: the rules of ``RULES_FILE`` and a built-in set.

Pure: no I/O, no clock, no logging. ``parse_rules`` turns the text of a rules file into a
``RuleSet`` (or raises ``RulesError`` naming the file, the rule and the field), ``classify`` picks
the first enabled rule that matches a ``Subject`` and answers with a ``RuleVerdict``. Reading the
file, reloading it when it changes and saying so is ``run.rules_file``'s business.

A rules file::

    rules:
      - name: payment-npe
        match: {log_pattern: "NullPointerException at PaymentService"}
        priority: P2
        remediation: {action: none}
        enabled: true
    include_defaults: true        # optional; false: only the file's rules are tried

Matching (``RuleMatch.matches``):

- every key given in ``match`` must hold (AND); ``match: {}`` matches everything (a catch-all);
  a rule without ``match`` is an error, so a forgotten key cannot silently catch everything;
- ``log_pattern``: a Python regular expression, searched (``re.search``, case-sensitive unless
  the pattern says ``(?i)``) in each of the subject's log lines; one line matching is enough;
- ``alertname``: a string or a list of strings (any of them), compared exactly;
- ``alert_labels``: a mapping label -> value; every label must be present with exactly that
  value. The alert's name counts as its ``alertname`` label, as in Alertmanager;
- ``pod_reason``: a ``model.PodProblem`` value (``CrashLoopBackOff``, ``OOMKilled``, ...) or a
  list of them; the subject matches when any of its pods' problems is among them;
- ``signal``: a ``model.Signal`` value (``error_spike``, ``pod_health``, ``progress_deadline``,
  ``alert``) or a list of them; the subject matches when any of its signals is among them.

A key the subject has nothing for (no log lines, no alert) does not hold. An empty list is an
error: it would match nothing, which is what ``enabled: false`` says more clearly.

Order: the file's rules are tried first, in file order, then the built-in set (``DEFAULT_RULES``)
so that a file of one rule keeps the common cases handled, unless the file says
``include_defaults: false``. First match wins. When nothing matches (only possible without the
defaults, whose last rule is a catch-all) the verdict is the fallback: rule ``default``, P3, no
action.

The built-in set, in order:

===================  ================================================  ========  ============
rule                 match                                             priority  action
===================  ================================================  ========  ============
rollout-regression   signal error_spike, pod_health, progress_deadline  P1       rollback
crash-loop           pod_reason CrashLoopBackOff                        P1       delete-pod
oom-killed           pod_reason OOMKilled                               P1       none
image-pull           pod_reason ImagePullBackOff, ErrImagePull          P2       none
default              (everything)                                       P3       none
===================  ================================================  ========  ============

A bad rollout comes first on purpose: when a new revision crash-loops, rolling it back is the
fix, deleting its pods is not. ``crash-loop`` therefore only decides for problems that no
rollout explains (an alert about a pod, say).

A rule only *chooses* an action. Whether it may run (``REMEDIATION_MODE``, ``ALLOWED_ACTIONS``,
namespaces, GitOps, the cooldown, the hourly cap, approvals) is ``judge.guardrails.decide``'s
business, unchanged: a rule can lower what the guardrails allow (``action: none``, a longer
``cooldown``), never raise it. A rule's ``cooldown`` shorter than ``REMEDIATION_COOLDOWN_MINUTES``
therefore has no effect; whoever applies it takes the longer of the two.

Validation: unknown keys anywhere (the allowed ones are listed), YAML syntax errors (with the
line), duplicate keys in a mapping, a missing, empty or duplicate ``name``, a ``priority`` not
P1..P4 (lowercase is accepted), an ``action`` not ``none`` nor one of
``config.REMEDIATION_ACTIONS``, a regular expression that does not compile, a ``cooldown`` that is
neither a number of seconds >= 0 nor a duration like ``90s``, ``10m``, ``1h``, ``1h30m``,
``enabled`` not a boolean, ``params`` not a mapping of the action's own parameters (``scale``
needs ``replicas``, a positive integer; the other actions take none), pod reasons and signals
that do not exist (case does not matter: they are stored as spelled in ``model``).
"""

from __future__ import annotations

# The rules and their classification live in rules_classify, the reading of a rules file in
# rules_parse; every name is importable from here.
from .rules_classify import (  # noqa: F401
    ACTIONS,
    BUILT_IN,
    DEFAULT_RULES,
    FALLBACK,
    FALLBACK_RULE,
    NO_ACTION,
    Rule,
    RuleMatch,
    RuleRemediation,
    RuleSet,
    RuleVerdict,
    Subject,
    classify,
)
from .rules_parse import (  # noqa: F401
    ACTION_PARAMS,
    MATCH_KEYS,
    REMEDIATION_KEYS,
    REQUIRED_PARAMS,
    RULE_KEYS,
    TOP_LEVEL_KEYS,
    RulesError,
    parse_rules,
)
