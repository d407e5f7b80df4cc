"""Knowledge-distillation methods and the machinery around them.

A method is the objective that :func:`kdcourse.train.fit` minimises, called once per batch as
``method(outputs, targets, *extras, inputs=..., features=...)`` (see ``method``); one module per method.

- ``method``: the interface (:class:`~kdcourse.kd.method.Method`), ``CrossEntropy``, plain functions as methods.
- ``features``: intermediate outputs by module path through forward hooks; the frozen live teacher.
- ``hinton``: Hinton et al.'s soft-target loss and its checks; ``HintonKD``.
- ``subclass``: subclass distillation, learned and known subclasses and their analysis; ``SubclassKD``.
- ``fitnets``: FitNets hints through a trained regressor; ``FitNets``.
- ``attention``: attention transfer between layer pairs; ``AttentionTransfer``.
- ``teachers``: teacher outputs computed once and cached.
- ``ensemble``: a teacher made of several networks, their logits averaged.
- ``stacked``: a grid of students trained together.
- ``takd``: teacher-assistant chains.
- ``eskd``: early-stopped teachers.

The nuclear-norm penalty of a student's layer, a method that wraps another, is ``kdcourse.lowrank.NuclearPenalty``.
"""
