"""The index of records by caller and day: views that stay fast however many records there are.

    entries  entry names (caller, day, time, where the record is), summaries, writing them
    listing  reading: a day a page at a time, days, callers; what a final record adds to its entry

Job records (``{jobs container}/{id}.json``) and archive records (``{day}/{id}/record.json``)
carry no caller in their names, and job records no day, so listing them by caller or by day
means reading every name ever written. The index names each record once more under
``_index/<caller>/<day>/`` (and ``_index/~all/<day>/`` for operators), in the jobs container.

Kept consistent under crashes by order: an entry is written *before* its record (a job's when
it is accepted, a synchronous generation's while upstream works on it), so a record that exists
has its entry; an entry whose record never came is a stray that readers skip. Blob index tags
(written with the record in one call) were the alternative: Find Blobs by Tags is eventually
consistent in Azure, needs the Storage Blob Data Owner role (tags/read, tags/write, filter), which
the app does not hold, and is missing on accounts with a hierarchical namespace.
"""

from __future__ import annotations

from shared.index.entries import ALL, Entry, Listed, RecordIndex, Summary, caller_key
from shared.index.listing import IndexReader, summary_of_job, summary_of_record

__all__ = ["ALL", "Entry", "IndexReader", "Listed", "RecordIndex", "Summary", "caller_key", "summary_of_job", "summary_of_record"]
