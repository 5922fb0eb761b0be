"""The Feast feature repo of recstream (declarative definitions) and its access layer.

``definitions`` declares entities, push sources, feature views and the versioned
``ranker_v1`` FeatureService; ``store`` opens the store and reads/writes sequences.
Feast is imported here first, through :func:`features._feast_env.import_feast`, which keeps
its import-time side effects (a metrics multiprocess directory in the environment, warning
filters) out of recstream's processes and of those they start.
"""

from features._feast_env import import_feast

import_feast()
