// Data the pages share.

import { get } from './api.js';
import { useAsync } from './ui.js';

/** The organisation's event types (`GET /rawmetrics`), fetched fresh for each page. */
export function useEventTypes() {
  return useAsync(() => get('/rawmetrics').then((r) => r.items || []), []);
}

/** Every column of an event type's table, as `/sql` shows it: [{name, type, note}]. */
export function tableColumns(t) {
  return [
    { name: 'customer_id', type: t.dataschema?.customer_id || 'String' },
    { name: 'timestamp', type: t.dataschema?.timestamp || 'DateTime64' },
    ...Object.entries(t.dataschema?.data || {}).map(([name, type]) => ({ name, type })),
    { name: '_ingested_at', type: 'DateTime64', note: 'arrival time' },
    { name: 'data', type: 'Struct', note: 'the data fields as one struct' },
  ];
}
