"""The Feast feature repo of recstream (declarative definitions) and its access layer.

``definitions`` declares entities, push sources, feature views and the versioned
``ranker_v1`` FeatureService; ``store`` opens the store and reads/writes sequences.
"""
