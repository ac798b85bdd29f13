-- The issue workflow: resolve, unresolve, ignore (forever, until a time, until N more),
-- assign; regression reopens a resolved group unless the event's release is older than the
-- release it was resolved in; every change lands in error_activity.
BEGIN;
SELECT plan(19);

SELECT monitoring.capture_error('{"exception_type": "W", "message": "m", "fingerprint": ["wf-1"], "release": "1.0.0"}');

SELECT is((monitoring.resolve_error('wf-1', '1.2.0', 'alice')).status, 'resolved', 'resolve_error()');
SELECT results_eq($$SELECT resolved_by, resolved_in_release, resolved_at IS NOT NULL FROM monitoring.tb_error_log WHERE error_fingerprint = 'wf-1'$$,
                  $$VALUES ('alice', '1.2.0', true)$$, 'who resolved it and in which release');

SELECT monitoring.capture_error('{"exception_type": "W", "message": "m", "fingerprint": ["wf-1"], "release": "1.1.9"}');
SELECT is((SELECT status FROM monitoring.tb_error_log WHERE error_fingerprint = 'wf-1'), 'resolved',
          'an occurrence from an older release does not reopen it');
SELECT monitoring.capture_error('{"exception_type": "W", "message": "m", "fingerprint": ["wf-1"], "release": "1.10.0"}');
SELECT is((SELECT status FROM monitoring.tb_error_log WHERE error_fingerprint = 'wf-1'), 'unresolved',
          'an occurrence from a newer release (1.10.0 > 1.2.0) reopens it');
SELECT ok((SELECT regressed_at IS NOT NULL AND resolved_at IS NULL FROM monitoring.tb_error_log WHERE error_fingerprint = 'wf-1'),
          'marked as regressed');
SELECT is((SELECT details->>'release' FROM monitoring.error_activity a JOIN monitoring.tb_error_log g USING (error_id)
           WHERE g.error_fingerprint = 'wf-1' AND a.action = 'regression'), '1.10.0', 'the regression is in the activity');

SELECT monitoring.resolve_error('wf-1');
SELECT monitoring.capture_error('{"exception_type": "W", "message": "m", "fingerprint": ["wf-1"]}');
SELECT is((SELECT status FROM monitoring.tb_error_log WHERE error_fingerprint = 'wf-1'), 'unresolved',
          'resolved without a release: any new occurrence reopens it');

SELECT is((monitoring.unresolve_error('wf-1')).status, 'unresolved', 'unresolve_error()');

-- Ignore forever, until a time, until N more occurrences.
SELECT is((monitoring.ignore_error('wf-1')).status, 'ignored', 'ignore_error() forever');
SELECT monitoring.capture_error('{"exception_type": "W", "message": "m", "fingerprint": ["wf-1"]}');
SELECT is((SELECT status FROM monitoring.tb_error_log WHERE error_fingerprint = 'wf-1'), 'ignored', 'stays ignored');
SELECT is((SELECT ignored FROM monitoring.errors WHERE fingerprint = 'wf-1' LIMIT 1), true, 'monitoring.errors shows ignored');

SELECT monitoring.ignore_error('wf-1', now() - interval '1 second');
SELECT monitoring.capture_error('{"exception_type": "W", "message": "m", "fingerprint": ["wf-1"]}');
SELECT is((SELECT status FROM monitoring.tb_error_log WHERE error_fingerprint = 'wf-1'), 'unresolved',
          'an ignore until a past time ends at the next occurrence');

SELECT monitoring.ignore_error('wf-1', p_more_occurrences => 2);
SELECT monitoring.capture_error('{"exception_type": "W", "message": "m", "fingerprint": ["wf-1"]}');
SELECT is((SELECT status FROM monitoring.tb_error_log WHERE error_fingerprint = 'wf-1'), 'ignored', 'one more: still ignored');
SELECT monitoring.capture_error('{"exception_type": "W", "message": "m", "fingerprint": ["wf-1"]}');
SELECT monitoring.capture_error('{"exception_type": "W", "message": "m", "fingerprint": ["wf-1"]}');
SELECT is((SELECT status FROM monitoring.tb_error_log WHERE error_fingerprint = 'wf-1'), 'unresolved',
          'two more: the ignore ran out');

SELECT is((monitoring.assign_error('wf-1', 'dev@example.com')).assignee, 'dev@example.com', 'assign_error()');
SELECT is((SELECT assignee FROM monitoring.errors WHERE fingerprint = 'wf-1' LIMIT 1), 'dev@example.com', 'monitoring.errors shows the assignee');
SELECT is((monitoring.assign_error('wf-1', NULL)).assignee, NULL, 'assigning NULL unassigns');

SELECT results_eq(
    $$SELECT action FROM monitoring.error_activity a JOIN monitoring.tb_error_log g USING (error_id)
      WHERE g.error_fingerprint = 'wf-1' ORDER BY activity_id$$,
    $$VALUES ('first_seen'), ('resolve'), ('regression'), ('resolve'), ('regression'), ('unresolve'), ('ignore'),
             ('ignore'), ('unignore'), ('ignore'), ('unignore'), ('assign'), ('unassign')$$,
    'every change is in error_activity, in order');

SELECT throws_ok($$SELECT monitoring.resolve_error('no-such-fingerprint')$$, 'P0002',
                 'no error group with fingerprint or id ''no-such-fingerprint''', 'an unknown fingerprint is a clear error');

SELECT * FROM finish();
ROLLBACK;
