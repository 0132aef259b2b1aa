// Starts GraphiQL against the endpoint that served this page (so a path prefix in front of the
// server works), over HTTP for queries and mutations and WebSocket for subscriptions. The query
// and variables live in the URL's fragment (#query=…&variables=…), never sent to the server, so
// a link opens a ready query and reloading keeps what you typed.
(function () {
  'use strict';

  var endpoint = location.origin + location.pathname.replace(/\/+$/, '');
  var socket = endpoint.replace(/^http/, 'ws') + '/ws';
  var params = new URLSearchParams(location.hash.slice(1));

  function remember(key, value) {
    if (value) {
      params.set(key, value);
    } else {
      params.delete(key);
    }
    history.replaceState(null, '', '#' + params.toString());
  }

  var fetcher = GraphiQL.createFetcher({ url: endpoint, subscriptionUrl: socket });
  var props = {
    fetcher: fetcher,
    defaultEditorToolsVisibility: true,
    onEditQuery: function (value) {
      remember('query', value);
    },
    onEditVariables: function (value) {
      remember('variables', value);
    },
  };
  if (params.has('query')) {
    props.query = params.get('query');
  }
  if (params.has('variables')) {
    props.variables = params.get('variables');
  }
  ReactDOM.createRoot(document.getElementById('graphiql')).render(
    React.createElement(GraphiQL, props),
  );
})();
