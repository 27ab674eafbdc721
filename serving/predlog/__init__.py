"""The prediction log: one database row per answered image, and reviewers' feedback on them.

models     the SQLAlchemy tables (predictions, feedback); read them, don't redefine them
migrate    Alembic `upgrade head` (run by the API at startup)
writer     the background writer thread: a bounded queue, batched inserts, counted drops
store      the feedback lookups and inserts of POST /feedback
"""
